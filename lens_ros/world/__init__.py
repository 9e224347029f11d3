"""The synthetic RGB-D tabletop world: a simulator, not a data set.

Pure numpy (no ROS, no torch, no training code): the sim camera and the demo render it,
``training/`` draws its scenes and referring expressions, the benchmarks use it as a camera.

- ``spec``: objects, colours, shapes, sizes, the splits of colour-shape compositions;
- ``render``: camera intrinsics and pose, analytic solids, ray casting to RGB + depth + masks;
- ``language``: referring expressions (simple, relational, reasoning) and their rationales;
- ``scene``: scene sampling, ``make_example`` and the ``SceneAnimator`` the sim camera moves.
"""
