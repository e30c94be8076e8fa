"""uvicorn's httptools HTTP/1.1 protocol with the guards an exposed server needs.

* Request headers are bounded: more than ``max_header_bytes`` before the headers end gets 431 and
  the connection is closed (httptools itself buffers an unfinished header without limit).
* Headers must arrive within ``header_timeout_s`` of a connection opening or of the previous
  response (slowloris); then 408, or a plain close if nothing at all was sent.
* Malformed HTTP gets a JSON 400 like every other error, not uvicorn's plain text.
* At shutdown an idle keep-alive connection is closed after ``SHUTDOWN_LINGER_S`` rather than at
  once, so a request already on the wire is answered (503 while draining) instead of reset.
* Lingering close after an early answer (413, 408, 431, or any answer sent while the request body is
  still arriving): closing a socket with unread data makes the kernel send a reset, which can
  overtake the response, so a client that sends its whole body before reading (Python's urllib,
  requests) saw "connection reset" instead of the JSON error. Like nginx's ``lingering_close``, the
  server sends its answer and a FIN (``write_eof``), then reads and discards what the client still
  sends, for at most ``LINGER_TIMEOUT_S`` between reads, ``LINGER_TOTAL_S`` in all and
  ``LINGER_MAX_BYTES``, and closes when the client closes its side or a bound is reached.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

SHUTDOWN_LINGER_S = 0.5
# Lingering close bounds (nginx: lingering_timeout 5 s, lingering_time 30 s).
LINGER_TIMEOUT_S = 5.0
LINGER_TOTAL_S = 30.0
LINGER_MAX_BYTES = 256 * 1024 * 1024


class LingeringTransport:
    """The connection's transport as uvicorn sees it.

    * ``close()`` lingers (see the module docstring) when the protocol is still receiving a request.
    * Writes made in one event-loop iteration go out as one ``send``: uvicorn writes a response's
      headers and its body separately, two system calls per small response (profiled: 12-15% of
      the event loop's time under load); they are joined and flushed at the end of the iteration
      (``call_soon``), or at once before ``close``/``write_eof``/``abort``.
    """

    def __init__(self, transport, protocol: "GuardedHttpToolsProtocol") -> None:
        self._transport, self._protocol = transport, protocol
        self._pending: list[bytes] | None = None

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._protocol.loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending or ()))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def close(self) -> None:
        self.flush()
        if self._protocol.receiving() and self._transport.can_write_eof() and not self._transport.is_closing():
            self._protocol.linger()
        else:
            self._transport.close()


def _json_response(status_line: bytes, error: str, message: str) -> bytes:
    body = json.dumps({"error": error, "message": message, "field": None}).encode()
    return (status_line + b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode()
            + b"\r\nconnection: close\r\n\r\n" + body)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; limits come from :func:`protocol_class`."""

    max_header_bytes = 65536
    header_timeout_s = 10.0

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._lingering = None  # (started, deadline timer, bytes discarded) while lingering
        super().connection_made(LingeringTransport(transport, self))
        self._expect_headers()

    # -- lingering close ----------------------------------------------------------------------

    def receiving(self) -> bool:
        """True while part of a request may still be on its way: its headers or its body."""
        if self._lingering is not None:
            return False
        cycle = self.cycle
        return (self._awaiting_headers and self._header_bytes > 0) or (
            cycle is not None and cycle.more_body and not getattr(cycle, "disconnected", False))

    def linger(self) -> None:
        """Send a FIN after the response and discard what the client still sends (bounded)."""
        raw = self.transport._transport
        self._stop_header_timer()
        self.transport.flush()
        try:
            raw.write_eof()
        except (OSError, RuntimeError):
            raw.close()
            return
        self._lingering = [self.loop.time(), self.loop.call_later(LINGER_TIMEOUT_S, raw.close), 0]
        raw.resume_reading()  # uvicorn may have paused reading while the body piled up

    def _linger_read(self, data: bytes) -> None:
        raw = self.transport._transport
        started, timer, discarded = self._lingering
        timer.cancel()
        discarded += len(data)
        if discarded > LINGER_MAX_BYTES or self.loop.time() - started > LINGER_TOTAL_S:
            raw.close()
            return
        self._lingering = [started, self.loop.call_later(LINGER_TIMEOUT_S, raw.close), discarded]

    def eof_received(self):
        if self._lingering is not None:
            self.transport._transport.close()  # the client sent all it had: the answer is safe
        return super().eof_received()

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
        if self._lingering is not None:
            return self._linger_read(data)
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
        if self._lingering is not None:  # answered early: no keep-alive, no next request
            self.server_state.total_requests += 1
            return
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._expect_headers()  # not when a pipelined request whose headers were read started

    def connection_lost(self, exc) -> None:
        self._stop_header_timer()
        if self._lingering is not None:
            self._lingering[1].cancel()
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
