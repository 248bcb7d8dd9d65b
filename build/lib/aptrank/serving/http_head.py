"""HTTP/1.1 request heads and response heads for aptrank's own server stacks (RFC 9112).

One parser for both stacks (:mod:`serving.http_loop`, :mod:`serving.http_stdlib`): request line and
header lines into a :class:`Head`, or a :class:`HeadError` carrying the answer: 400 for a malformed
request line, header line or ``Content-Length``, 431 for an oversized head, 501 for
``Transfer-Encoding`` (bodies must carry a ``Content-Length``). Header names are lower-cased into a
dict instead of running ``http.client.parse_headers`` (the ``email`` package's parser) per request.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from http import HTTPStatus

MAX_HEADERS = 100
MAX_HEADER_LINE = 8192
MAX_HEAD_BYTES = (MAX_HEADERS + 2) * (MAX_HEADER_LINE + 2)
"""A head that grows past this without its blank line is refused (431) before it is complete."""
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
IDLE_TIMEOUT_S = 60.0
"""Default seconds after which a connection that sends nothing (and, in the event loop, receives
nothing) is closed: keep-alive clients that went quiet, and clients that open a request and stall
(slowloris), do not hold a connection forever."""
ACCEPT_DELAY_S = 0.0005
"""Per open connection, how long a worker of a shared listening socket waits before ``accept``: the
worker with fewer connections wins the race, so keep-alive connections spread evenly."""


class HeadError(ValueError):
    """A request head that cannot be served: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Head:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    length: int
    keep_alive: bool
    expect_continue: bool


def _line(raw: bytes) -> str:
    return raw.decode("latin-1").rstrip("\r\n")


def parse_head(request_line: bytes, header_lines: list[bytes]) -> Head:
    """``header_lines``: the lines after the request line, up to (not including) the blank line;
    at most ``MAX_HEADERS + 1`` of them need to be passed for the count check to fire."""
    text = _line(request_line)
    parts = text.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise HeadError(400, f"bad request line {text[:100]!r}")
    if len(header_lines) > MAX_HEADERS:
        raise HeadError(431, f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for raw in header_lines:
        if len(raw) > MAX_HEADER_LINE:
            raise HeadError(431, "header line too long")
        name, colon, value = raw.decode("latin-1").partition(":")
        name, value = name.strip().lower(), value.strip()
        if not colon or not name:
            raise HeadError(400, f"bad header line {raw[:100]!r}")
        if name == "content-length" and headers.get(name, value) != value:
            raise HeadError(400, "conflicting Content-Length headers")
        headers[name] = value
    if "transfer-encoding" in headers:
        raise HeadError(501, "Transfer-Encoding is not supported; send a Content-Length")
    declared = headers.get("content-length", "0")
    if not declared.isdigit():
        raise HeadError(400, "bad Content-Length")
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if parts[2] == "HTTP/1.1" else connection == "keep-alive"
    expect = headers.get("expect", "").lower() == "100-continue"
    return Head(parts[0], parts[1], parts[2], headers, int(declared), keep_alive, expect)


def split_head(block: bytes) -> tuple[bytes, list[bytes]]:
    """A whole head (request line to the blank line, exclusive) into request line and header lines."""
    lines = block.split(b"\n")
    return lines[0], [line[:-1] if line.endswith(b"\r") else line for line in lines[1:]]


class DateCache:
    """The ``Date`` header value (RFC 9110 IMF-fixdate), formatted at most once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second, self._value = second, email.utils.formatdate(second, usegmt=True)
        return self._value


def response_bytes(status: int, content_type: str, body: bytes, *, server: str, date: str, close: bool) -> bytes:
    """Status line, headers and body as one buffer, so a response leaves in one write."""
    connection = "Connection: close\r\n" if close else ""
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nServer: {server}\r\nDate: {date}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{connection}\r\n"
    )
    return head.encode("latin-1") + body
