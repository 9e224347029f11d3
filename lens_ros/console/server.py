"""lens-console's web server: the page, its static files and one WebSocket per browser tab.

    lens-console [--host 127.0.0.1] [--port 8080] [--lens-node lens_node] [--ros-args ...]

The rclpy node (``ConsoleBridge``) spins in a thread of its own; the aiohttp server runs
the asyncio loop. What goes over the WebSocket:
- server -> page, text: ``{"type": "hello", ...}`` once, then ``{"type": "sections", ...}``
  with only the sections of ``ConsoleState`` that changed (latest value of each), and
  ``{"type": "notice", "text": ...}`` when an instruction is refused here;
- server -> page, binary: the overlay as JPEG (the lens node's ``~/overlay/compressed``,
  passed on as received), at most ``max_fps`` frames per second;
- page -> server, text: ``{"type": "instruction", "text": ...}``.
A tab that reads slowly only holds up its own sender, which then skips to the newest
frame and state: nothing queues up in the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
from dataclasses import replace

from aiohttp import WSMsgType, web

from lens_ros.console import security
from lens_ros.console.config import ConsoleConfig, is_loopback
from lens_ros.console.state import ConsoleState
from lens_ros.rate_limit import RateLimiter

MIN_INSTRUCTION_INTERVAL_S = 0.25  # per tab: typing is slower; a script flooding the topic is refused
# Per tab: the state changes with every tracked frame (30 Hz); what changed meanwhile goes in
# one message, at most 25 a second (the rationale still streams in steps a reader follows).
MIN_UPDATE_INTERVAL_S = 0.04


class Client:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.wake = asyncio.Event()
        self.wake.set()  # send the full state at once
        self.last_instruction = 0.0


class ConsoleServer:
    def __init__(self, config: ConsoleConfig, state: ConsoleState, publish_instruction) -> None:
        """``publish_instruction(text) -> ""`` or why it was refused."""
        self.config, self.state = config, state
        self.publish_instruction = publish_instruction
        self.token = config.resolved_token()
        self.static = security.StaticFiles()
        self.clients: set[Client] = set()
        self.jpeg: tuple[int, bytes] | None = None
        self.frames_forwarded = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._overlay_ready = asyncio.Event()
        self._forwarder: asyncio.Task | None = None

    # -- application ------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=4096)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/ws", self._websocket)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._close_clients)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _app) -> None:
        self._loop = asyncio.get_running_loop()
        self.state.on_change = self._on_state_change
        self._forwarder = asyncio.create_task(self._forward_overlays())

    async def _close_clients(self, _app) -> None:
        for client in list(self.clients):
            await client.ws.close(code=1001, message=b"console stopping")

    async def _stop(self, _app) -> None:
        self.state.on_change = lambda section: None
        if self._forwarder is not None:
            self._forwarder.cancel()

    def _on_state_change(self, section: str) -> None:
        """From the ROS thread: wake the senders (or the overlay forwarder) in the server's loop."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, section)

    def _wake(self, section: str) -> None:
        if section == "overlay":
            self._overlay_ready.set()
            return
        for client in self.clients:
            client.wake.set()

    # -- security ---------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler):
        where = ""
        if self.token:
            presented, where = security.presented_token(request.headers, request.query, request.cookies)
            if not security.token_matches(presented, self.token):
                return self._refuse(401, "a valid token is required (?token=... or Authorization: Bearer ...)")
        elif not security.loopback_name(request.host):
            return self._refuse(403, "this console answers to localhost names only (start it with a token)")
        response = await handler(request)
        if not response.prepared:  # the WebSocket's handshake is already sent
            response.headers.update(security.SECURITY_HEADERS)
            if self.token and where == "query":
                response.set_cookie(security.TOKEN_COOKIE, self.token, httponly=True, samesite="Strict", path="/")
        return response

    @staticmethod
    def _refuse(status: int, text: str) -> web.Response:
        return web.Response(status=status, text=text + "\n", headers=security.SECURITY_HEADERS)

    # -- HTTP -------------------------------------------------------------------------
    async def _index(self, _request: web.Request) -> web.Response:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.Response:
        found = self.static.get(name)
        if found is None:
            raise web.HTTPNotFound(text="no such file\n")
        body, kind = found
        return web.Response(body=body, content_type=kind, charset="utf-8")

    # -- WebSocket --------------------------------------------------------------------
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not security.origin_allowed(
            request.headers.get("Origin"), request.scheme, request.host, self.config.extra_origins()
        ):
            return self._refuse(403, "cross-origin WebSocket refused")
        if len(self.clients) >= self.config.max_clients:
            return self._refuse(503, f"{self.config.max_clients} tabs are connected already")
        # A JSON-escaped instruction of max_instruction_length characters fits, nothing much larger.
        ws = web.WebSocketResponse(max_msg_size=12 * self.config.max_instruction_length + 256, heartbeat=20.0)
        await ws.prepare(request)
        client = Client(ws)
        self.clients.add(client)
        sender = asyncio.create_task(self._send(client))
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "lens_node": self.config.lens_node,
                    "max_instruction_length": self.config.max_instruction_length,
                    "max_fps": self.config.max_fps,
                }
            )
            self._overlay_ready.set()  # a new tab gets the newest frame at once
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._receive(client, message.data)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            self.clients.discard(client)
            sender.cancel()
        return ws

    async def _receive(self, client: Client, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if (
            not isinstance(message, dict)
            or message.get("type") != "instruction"
            or not isinstance(message.get("text"), str)
        ):
            await client.ws.send_json({"type": "notice", "text": 'expected {"type": "instruction", "text": "..."}'})
            return
        now = time.monotonic()
        if now - client.last_instruction < MIN_INSTRUCTION_INTERVAL_S:
            await client.ws.send_json({"type": "notice", "text": "instructions too fast; wait a moment"})
            return
        client.last_instruction = now
        problem = self.publish_instruction(message["text"])
        if problem:
            await client.ws.send_json({"type": "notice", "text": f"not sent: {problem}"})

    async def _send(self, client: Client) -> None:
        """One tab's sender: the sections that changed and the newest frame, then wait."""
        versions = None
        frame_seq = 0
        try:
            while not client.ws.closed:
                await client.wake.wait()
                client.wake.clear()
                changed, versions = self.state.sections(versions)
                if changed:
                    await client.ws.send_str(json.dumps({"type": "sections", **changed}))
                jpeg = self.jpeg
                if jpeg is not None and jpeg[0] != frame_seq:
                    frame_seq = jpeg[0]
                    await client.ws.send_bytes(jpeg[1])
                await asyncio.sleep(MIN_UPDATE_INTERVAL_S)
        except (ConnectionError, RuntimeError):
            pass  # the tab went away while we were writing to it

    async def _forward_overlays(self) -> None:
        """Hand the newest overlay JPEG to every tab, at most max_fps times a second."""
        rate = RateLimiter(self.config.max_fps)
        forwarded_seq = 0
        while True:
            await asyncio.sleep(rate.wait_s())
            await self._overlay_ready.wait()
            self._overlay_ready.clear()
            latest = self.state.latest_overlay()
            if not self.clients or latest is None or latest[0] == forwarded_seq:
                continue
            rate.take()
            forwarded_seq = latest[0]
            self.jpeg = latest
            self.frames_forwarded += 1
            for client in self.clients:
                client.wake.set()


async def serve(config: ConsoleConfig, server: ConsoleServer, stop: asyncio.Event) -> None:
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else config.port
    host = f"[{config.host}]" if ":" in config.host else config.host
    note = "" if not server.token else " (token required: open it with ?token=<token>)"
    print(f"[lens-console] serving http://{host}:{port}/{note}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    from lens_ros.console.ros_bridge import ConsoleBridge
    from lens_ros.ros_env import configure_dds

    argv = list(sys.argv if argv is None else argv)
    cli = argparse.ArgumentParser(prog="lens-console", description="Operator console (web page) for lens_node.")
    cli.add_argument("--host", help=f"listen address (default {ConsoleConfig.host}; not loopback: needs a token)")
    cli.add_argument("--port", type=int, help=f"TCP port (default {ConsoleConfig.port}; 0: any free port)")
    cli.add_argument("--lens-node", help=f"name of the lens node (default {ConsoleConfig.lens_node})")
    options = cli.parse_args(remove_ros_args(argv)[1:])
    given = {k: v for k, v in vars(options).items() if v is not None}
    defaults = replace(ConsoleConfig(), **given)

    configure_dds()
    context = rclpy.Context()
    rclpy.init(args=argv, context=context, signal_handler_options=SignalHandlerOptions.NO)
    bridge = None
    try:
        bridge = ConsoleBridge(defaults, context=context)
        config = bridge.config
        config.check()
    except (ValueError, InvalidParameterValueException) as exc:
        print(f"lens-console: {exc}", file=sys.stderr)
        if bridge is not None:
            bridge.destroy_node()
        rclpy.shutdown(context=context)
        return 2
    if not is_loopback(config.host):
        print(f"[lens-console] listening on {config.host}: every request needs the token", file=sys.stderr)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(bridge)

    def spin() -> None:
        try:
            executor.spin()
        except ExternalShutdownException:
            pass

    spinner = threading.Thread(target=spin, name="lens-console-ros", daemon=True)
    spinner.start()
    server = ConsoleServer(config, bridge.state, bridge.publish_instruction)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, server, stop)

    code = 0
    try:
        asyncio.run(run())
    except OSError as exc:  # port in use, address not available
        print(f"lens-console: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        code = 1
    finally:
        executor.shutdown()
        bridge.destroy_node()
        rclpy.shutdown(context=context)
        spinner.join(timeout=2.0)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
