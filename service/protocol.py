"""uvicorn's httptools HTTP/1.1 protocol with the guards an exposed server needs.

* Request headers are bounded: more than ``max_header_bytes`` before the headers end gets 431 and
  the connection is closed (httptools itself buffers an unfinished header without limit).
* Headers must arrive within ``header_timeout_s`` of a connection opening or of the previous
  response (slowloris); then 408, or a plain close if nothing at all was sent.
* Malformed HTTP gets a JSON 400 like every other error, not uvicorn's plain text.
* At shutdown an idle keep-alive connection is closed after ``SHUTDOWN_LINGER_S`` rather than at
  once, so a request already on the wire is answered (503 while draining) instead of reset.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SHUTDOWN_LINGER_S = 0.5


def _json_response(status_line: bytes, error: str, message: str) -> bytes:
    body = json.dumps({"error": error, "message": message, "field": None}).encode()
    return (status_line + b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n" + body)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; limits come from :func:`protocol_class`."""

    max_header_bytes = 65536
    header_timeout_s = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_headers()

    def _expect_headers(self) -> None:
        self._awaiting_headers, self._header_bytes, self._tail = True, 0, b""
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        self._awaiting_headers = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            if self._header_bytes:
                self.transport.write(_json_response(b"HTTP/1.1 408 Request Timeout\r\n", "header_timeout",
                                                    f"request headers not received within {self.header_timeout_s:g} s"))
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            # measure the header block before the parser sees it: headers that end inside this
            # chunk are counted up to their blank line, unfinished ones in full
            window = self._tail + data
            end = window.find(b"\r\n\r\n")
            size = self._header_bytes + (end - len(self._tail) + 4 if end >= 0 else len(data))
            self._header_bytes += len(data)
            self._tail = window[-3:]
            if size > self.max_header_bytes:
                if not self.transport.is_closing():
                    self.transport.write(_json_response(
                        b"HTTP/1.1 431 Request Header Fields Too Large\r\n", "headers_too_large",
                        f"request headers over {self.max_header_bytes} bytes"))
                    self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._expect_headers()  # not when a pipelined request whose headers were read started

    def connection_lost(self, exc) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_json_response(b"HTTP/1.1 400 Bad Request\r\n", "invalid_http", msg))
        self.transport.close()

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.loop.call_later(SHUTDOWN_LINGER_S, self._close_if_idle)
        else:
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            if not self.transport.is_closing():
                self.transport.close()
        else:
            self.cycle.keep_alive = False


def protocol_class(max_header_bytes: int, header_timeout_s: float) -> type[GuardedHttpToolsProtocol]:
    """A :class:`GuardedHttpToolsProtocol` subclass with these limits (uvicorn's ``http=``)."""
    return type("PressoHttpProtocol", (GuardedHttpToolsProtocol,),
                {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s})
