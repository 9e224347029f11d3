"""lens-console: an operator's web page for a running lens_node, served by the console itself.

    lens-console [--host 127.0.0.1] [--port 8080]   (or the launch argument console:=true)

``server`` is the aiohttp application (page, static files, one WebSocket per browser tab),
``ros_bridge`` the rclpy node inside it (subscribes to the lens node's outputs, publishes
``/instruction``), ``state`` what both share (no ROS, no HTTP), ``security`` the checks every
request passes, ``config`` the settings. The page itself is plain HTML/JS/CSS in ``static/``.
"""
