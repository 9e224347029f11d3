"""The console's security rules, each against a running lens-console process.

Loopback by default; a token on every HTTP request and the WebSocket when one is set (always,
off loopback); foreign Host names refused without a token; the WebSocket's Origin checked;
instructions bounded by the node's rule; static files only from the package's folder.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import aiohttp
import pytest
from console_fixtures import run

from lens_ros.console.config import ConsoleConfig
from lens_ros.console.security import TOKEN_COOKIE, StaticFiles
from lens_ros.launch_description import CONSOLE, node_specs

TOKEN = "s3cret-token-for-the-console-test"
PAGES = ("/", "/static/console.js", "/static/console.css", "/static/missing.js")

pytestmark = pytest.mark.ros


async def http_status(url: str, **kwargs) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, allow_redirects=False, **kwargs) as response:
        return response.status


async def ws_status(url: str, **kwargs) -> int:
    """101 when the WebSocket opened (and said hello), else the HTTP status it was refused with."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, **kwargs) as ws:
                hello = await ws.receive_json(timeout=10)
                assert hello["type"] == "hello", hello
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def test_default_address_is_loopback_port_8080(start_console):
    assert (ConsoleConfig.host, ConsoleConfig.port) == ("127.0.0.1", 8080)
    console_spec = next(s for s in node_specs({"console": "true"}) if s.name == CONSOLE)
    assert (console_spec.parameters["host"], console_spec.parameters["port"]) == ("127.0.0.1", 8080)
    assert all(s.name != CONSOLE for s in node_specs({})), "the console starts only when asked"
    console = start_console("--port", "0")
    assert "serving http://127.0.0.1:" in console.output()


def test_listening_off_loopback_needs_a_token(start_console):
    env = {k: v for k, v in os.environ.items() if k != "LENS_CONSOLE_TOKEN"}
    refused = start_console("--host", "0.0.0.0", "--port", "0", env={**env, "LENS_CONSOLE_TOKEN": ""}, wait=False)
    assert refused.wait_exit() == 2
    assert "LENS_CONSOLE_TOKEN" in refused.output() and "serving" not in refused.output()
    short = start_console("--host", "0.0.0.0", "--port", "0", env={"LENS_CONSOLE_TOKEN": "short"}, wait=False)
    assert short.wait_exit() == 2 and "at least 16 characters" in short.output()


def test_token_is_checked_on_every_http_request_and_the_websocket(start_console):
    console = start_console("--host", "0.0.0.0", "--port", "0", env={"LENS_CONSOLE_TOKEN": TOKEN})
    base, ws = console.url, console.url + "/ws"

    async def check():
        for path in PAGES:
            assert await http_status(base + path) == 401, f"{path} served without the token"
            assert await http_status(base + path, headers={"Authorization": "Bearer wrong"}) == 401
            expected = 404 if "missing" in path else 200
            assert await http_status(base + path, headers={"Authorization": f"Bearer {TOKEN}"}) == expected
        assert await ws_status(ws) == 401
        assert await ws_status(ws + "?token=" + TOKEN[:-1] + "x") == 401
        assert await ws_status(ws, headers={"Authorization": f"Bearer {TOKEN}"}) == 101
        # A browser: the first page load carries ?token=, the cookie then carries it
        # (unsafe: aiohttp's jar otherwise ignores cookies of IP addresses, browsers do not).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            async with session.get(f"{base}/?token={TOKEN}") as response:
                assert response.status == 200
                cookie = response.cookies[TOKEN_COOKIE]
                assert cookie["httponly"] and cookie["samesite"] == "Strict"
            async with session.get(f"{base}/static/console.js") as response:
                assert response.status == 200
            async with session.ws_connect(ws, headers={"Origin": base}) as socket:
                assert (await socket.receive_json(timeout=10))["type"] == "hello"

    run(check())


def test_websocket_checks_origin(start_console):
    console = start_console("--port", "0")
    token_console = start_console("--host", "0.0.0.0", "--port", "0", env={"LENS_CONSOLE_TOKEN": TOKEN})

    async def check():
        ws = console.url + "/ws"
        assert await ws_status(ws, headers={"Origin": "http://evil.example"}) == 403
        assert await ws_status(ws, headers={"Origin": f"http://127.0.0.1:{console.port + 1}"}) == 403
        assert await ws_status(ws, headers={"Origin": console.url}) == 101
        # The token does not let another site's page in either.
        authorised = {"Authorization": f"Bearer {TOKEN}"}
        token_ws = token_console.url + "/ws"
        assert await ws_status(token_ws, headers={**authorised, "Origin": "http://evil.example"}) == 403
        assert await ws_status(token_ws, headers={**authorised, "Origin": token_console.url}) == 101

    run(check())


def test_foreign_host_names_are_refused_without_a_token(start_console):
    """DNS rebinding: a site whose name now points at 127.0.0.1 sends its own name as Host."""
    console = start_console("--port", "0")

    async def check():
        for path in (*PAGES, "/ws"):
            assert await http_status(console.url + path, headers={"Host": f"attacker.example:{console.port}"}) == 403
        assert await http_status(console.url + "/", headers={"Host": f"localhost:{console.port}"}) == 200

    run(check())


def test_static_files_only_from_the_package_folder(start_console, tmp_path):
    console = start_console("--port", "0")
    attempts = [
        "/static/../server.py",
        "/static/..%2fserver.py",
        "/static/%2e%2e%2fserver.py",
        "/static/%2e%2e/%2e%2e/node.py",
        "/static/....//server.py",
        "/static/%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/..%5cserver.py",
        "/../../../../etc/passwd",
        "/static/index.html%00.js",
    ]

    def fetch(path: str) -> tuple[int, bytes]:
        # curl sends the path as written (no client-side normalisation of ../ or %2e).
        out = subprocess.run(
            ["curl", "-s", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", console.url + path],
            capture_output=True,
            timeout=30,
        )
        body, _, code = out.stdout.rpartition(b"\n")
        return int(code), body

    for path in attempts:
        code, body = fetch(path)
        assert code in (400, 404), f"{path}: {code}"
        assert b"import" not in body and b"root:" not in body, f"{path} leaked a file"
    assert fetch("/static/console.js")[0] == 200
    # What the table holds: regular files of known kinds in the folder, no links out of it.
    (tmp_path / "page.html").write_text("<p>page</p>")
    (tmp_path / "secret.txt").write_text("not a static kind")
    (tmp_path / "link.html").symlink_to("/etc/hostname")
    assert set(StaticFiles(tmp_path).files) == {"page.html"}


def test_instructions_are_bounded_as_in_the_node(start_console, probe):
    from std_msgs.msg import String

    from lens_ros.messages import INSTRUCTION_TOPIC
    from lens_ros.model.limits import MAX_INSTRUCTION_CHARS
    from lens_ros.node_config import NodeConfig
    from lens_ros.node_inputs import clean_instruction

    console = start_console("--port", "0")
    limit = NodeConfig.max_instruction_length
    assert limit == MAX_INSTRUCTION_CHARS, "the console takes the node's bound"
    looser = start_console("--port", "0", "--ros-args", "-p", f"max_instruction_length:={limit + 1}", wait=False)
    assert looser.wait_exit() == 2, "a console must not pass on instructions the node refuses"
    assert "max_instruction_length" in looser.output() and "Traceback" not in looser.output()

    async def exchange():
        async with aiohttp.ClientSession() as session, session.ws_connect(console.url + "/ws") as ws:
            assert (await ws.receive_json(timeout=10))["max_instruction_length"] == limit
            await ws.send_json({"type": "instruction", "text": "x" * (limit + 1)})
            notice = await next_of_type(ws, "notice")
            assert clean_instruction("x" * (limit + 1), limit)[1] in notice["text"], "the node's own words"
            assert str(limit) in notice["text"]
            await asyncio.sleep(0.3)  # the per-tab pace
            await ws.send_json({"type": "instruction", "text": "  the   red\tcube  "})
            await asyncio.sleep(0.5)
            # A message far larger than any instruction closes the socket (message too big).
            await ws.send_str("{" + " " * (20 * limit) + "}")
            closed = await next_not_text(ws)
            assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
            assert ws.close_code == 1009, ws.close_code

    run(exchange())
    # A subscriber that joins afterwards still gets it (latched QoS), cleaned as the node cleans it.
    received = probe.subscribe(String, INSTRUCTION_TOPIC, _latched())
    probe.spin_until(lambda: received, 20.0, "the instruction on /instruction")
    probe.spin_for(0.5)
    assert [m.data for _, m in received] == ["the red cube"], "only the valid instruction is published"


def _latched():
    from lens_ros.messages import latched_qos

    return latched_qos()


async def next_not_text(ws, timeout: float = 10.0) -> aiohttp.WSMessage:
    """The first message that is not a state update (a close, when the socket is closed)."""
    deadline = time.monotonic() + timeout
    while True:
        message = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        if message.type != aiohttp.WSMsgType.TEXT:
            return message


async def next_of_type(ws, kind: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = await ws.receive(timeout=deadline - time.monotonic())
        if message.type == aiohttp.WSMsgType.TEXT:
            data = message.json()
            if data["type"] == kind:
                return data
    raise AssertionError(f"no {kind} message within {timeout} s")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
