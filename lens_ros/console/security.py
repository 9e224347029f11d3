"""The checks every console request passes: token, Host, WebSocket Origin, static file names.

- Token: when one is set (always, off loopback) every HTTP request and the WebSocket must
  carry it: ``Authorization: Bearer <token>``, the ``token`` query parameter (the first page
  load; answered with an HttpOnly, SameSite=Strict cookie) or that cookie. Compared in
  constant time.
- Host: without a token the console serves loopback names only, so a web page whose own
  name was re-pointed at 127.0.0.1 (DNS rebinding) cannot read or drive it.
- Origin: a browser's WebSocket must come from the page's own origin (or one listed in
  ``allowed_origins``); other sites' pages are refused. Clients without an Origin header
  are not browsers, and are left to the token.
- Static files: a fixed table of the package's ``static/`` folder read at start-up; a
  request names one entry of it or gets 404 (no file-system path is ever built from a URL).
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

TOKEN_COOKIE = "lens_console_token"
STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
MAX_STATIC_BYTES = 1 << 20
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob:; connect-src 'self'; script-src 'self'; style-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the first URL may carry the token
    "Cache-Control": "no-store",
}


def presented_token(headers, query, cookies) -> tuple[str, str]:
    """(token the client presented, where: "header", "query", "cookie" or "")."""
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer ") :].strip(), "header"
    if "token" in query:
        return query["token"], "query"
    if TOKEN_COOKIE in cookies:
        return cookies[TOKEN_COOKIE], "cookie"
    return "", ""


def token_matches(presented: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def loopback_name(host_header: str) -> bool:
    """Whether a Host header names this machine's loopback (localhost, 127.x.y.z, [::1])."""
    name = urlsplit(f"//{host_header}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def origin_allowed(origin: str | None, scheme: str, host_header: str, extra: tuple[str, ...] = ()) -> bool:
    """A WebSocket's Origin: absent (not a browser), the page's own, or listed."""
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    own = f"{'https' if scheme in ('https', 'wss') else 'http'}://{host_header.lower()}"
    return origin == own or origin in extra


class StaticFiles:
    """The package's static files, read once: name -> (bytes, content type)."""

    def __init__(self, folder: Path = STATIC_DIR) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        for path in sorted(folder.iterdir()):
            kind = CONTENT_TYPES.get(path.suffix)
            if kind and path.is_file() and not path.is_symlink() and path.stat().st_size <= MAX_STATIC_BYTES:
                self.files[path.name] = (path.read_bytes(), kind)

    def get(self, name: str) -> tuple[bytes, str] | None:
        return self.files.get(name)
