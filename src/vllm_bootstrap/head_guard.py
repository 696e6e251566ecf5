"""What a client can make the server do before any route runs: bounded in size and time.

uvicorn reads a request's line and headers without a limit and waits for them forever; a
single 100 MB header line froze the event loop for seconds, without the access key, and a
connection that never finishes its head held a file descriptor for good. This protocol is
uvicorn's own, with two limits on the request head (the request line and headers):

- over `max_head_bytes` it answers 431 and closes the connection, so a head costs at most
  the limit (plus one socket read) in memory and parsing, however it arrives: a large read
  is parsed in slices of HEAD_SLICE_BYTES with the bytes counted between them, so a head
  that arrives whole in one read (and never looks incomplete) is measured too, within one
  slice; the parsed request line and fields are counted as well;
- the next head on a kept-alive connection is held to the same limits from its first byte
  (blank lines between requests included, which the parser does not report); its refusal
  waits until the responses to the requests before it are sent, so a client never takes
  the 431 for an earlier request's answer;
- a head not complete `head_timeout_seconds` after the connection opened, or after the
  previous response, gets 408 and the connection is closed;
- a request body that stops arriving for `body_idle_seconds` gets 408 (or, once the response
  has begun, its connection cut);
- at most `max_pending_heads` connections may be sending their head at once; a newcomer past
  that makes the oldest one leave (408), so half-sent requests can neither use up the
  server's file descriptors nor lock anyone out.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vllm_bootstrap.config import Settings

# A read larger than this, outside a body, is parsed a slice at a time, so that a head that
# arrives whole in one read is measured (to within a slice) before any route runs.
HEAD_SLICE_BYTES = 8 * 1024
_REQUEST_LINE = b"GET  HTTP/1.1\r\n\r\n"  # what a head has besides its target and fields


class HeadGuardProtocol(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    head_timeout_seconds = 30.0
    body_idle_seconds = 60.0
    max_pending_heads = 512
    # Connections whose request head is not complete yet, oldest first, across the server.
    # Past max_pending_heads a new connection makes the oldest one leave (408): unfinished
    # heads (slowloris) can neither exhaust file descriptors nor lock newcomers out.
    pending: ClassVar[dict[HeadGuardProtocol, None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # bytes received for the current head (outside bodies)
        self._slice_bytes = 0  # of those, the ones the parser is reading right now
        self._counting = True  # whether the read being parsed is counted (not a body's)
        self._reading_head = True  # from a head's first byte until it is complete
        self._head_timer: asyncio.TimerHandle | None = None
        self._reading_body = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._refused = False  # whatever the parser still finds is dropped
        self._deferred_refusal: bytes | None = None  # sent once earlier responses are

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.pending) >= self.max_pending_heads:
            oldest = next(iter(self.pending))
            oldest._refuse_head(408, "too many connections are sending their request head at once")
            self.pending.pop(oldest, None)
        self.pending[self] = None
        self._arm_head_timer()  # a connection that never sends a byte is timed out too

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_body_timer()
        self.pending.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._reading_body or len(data) <= HEAD_SLICE_BYTES:
            self._receive(data)
            return
        for start in range(0, len(data), HEAD_SLICE_BYTES):
            self._receive(data[start : start + HEAD_SLICE_BYTES])
            if self._refused or self.transport.get_protocol() is not self:  # or upgraded
                return

    def _receive(self, data: bytes) -> None:
        self._counting = not self._reading_body
        if self._counting:
            # A head (or the blank lines before one) is arriving.
            self._reading_head = True
            self._head_bytes += len(data)
            self._slice_bytes = len(data)
        super().data_received(data)
        if self._refused:
            return
        if self._reading_head:
            if self._head_bytes > self.max_head_bytes:
                self._refuse_head(431, f"request line and headers over {self.max_head_bytes} bytes")
            elif self._head_timer is None:
                # Armed only when a head is still incomplete after a read: a request whose
                # head comes in one piece (nearly all) never costs a timer.
                self.pending[self] = None
                self._arm_head_timer()
        elif self._reading_body:
            self._stop_body_timer()
            self._body_timer = self.loop.call_later(self.body_idle_seconds, self._body_stalled)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head = True  # the next request on a kept-alive connection

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        if self._head_too_large():
            self._refuse_head(431, f"request line and headers over {self.max_head_bytes} bytes")
            return
        self._reading_head = False
        self._reading_body = True  # until the message is complete, at once for a GET
        self._head_bytes = 0
        self.pending.pop(self, None)
        self._stop_head_timer()
        super().on_headers_complete()

    def _head_too_large(self) -> bool:
        """Bytes counted before the slice being parsed all belong to this head; of that
        slice (or of a read begun in a body, not counted) the parser has read an unknown
        part: the parsed request target and fields stand in for it."""
        if self._counting and self._head_bytes - self._slice_bytes > self.max_head_bytes:
            return True
        parsed = len(self.url) + len(_REQUEST_LINE)
        for name, value in self.headers:  # a loop: about 0.15 us for a usual head
            parsed += len(name) + len(value) + 4  # ": " and CRLF
        return parsed > self.max_head_bytes

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._reading_body = False
        self._reading_head = False  # until the next head's first byte arrives
        self._head_bytes = 0
        self._stop_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if any
        if self._deferred_refusal is not None and not self._responding() and not self.pipeline:
            self._send_and_close(self._deferred_refusal)

    def _arm_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_seconds, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _stop_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self._reading_head:
            return
        if self._responding():
            # A pipelined request's head while the previous response still streams (a long
            # generation): its time starts once that response is done.
            self._arm_head_timer()
            return
        self._refuse_head(408, f"request head not complete within {self.head_timeout_seconds:g} s")

    def _body_stalled(self) -> None:
        self._body_timer = None
        if not self._reading_body or self.transport.is_closing():
            return
        self._refused = True
        if self._responding() and self.cycle.response_started:
            # Writing a status line into a response under way would corrupt it; the cut
            # says enough.
            self.transport.close()
            return
        self._send_and_close(
            _refusal(408, f"no request body bytes for {self.body_idle_seconds:g} s")
        )

    def _responding(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _refuse_head(self, status: int, message: str) -> None:
        """Refuse the head being read: nothing more is read, and the answer goes out (and
        the connection closes) once the responses to earlier requests are sent."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._stop_head_timer()
        self.pending.pop(self, None)
        answer = _refusal(status, message)
        if self._responding() or self.pipeline:
            self._deferred_refusal = answer
            return
        self._send_and_close(answer)

    def _send_and_close(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()


def _refusal(status: int, message: str) -> bytes:
    reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
    body = message.encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (status, reason, len(body), body)
    )


def head_guard_protocol(settings: Settings) -> type[HeadGuardProtocol]:
    """The protocol class for uvicorn's `http` option, with the settings' limits."""
    return type(
        "HeadGuardProtocol",
        (HeadGuardProtocol,),
        {
            "max_head_bytes": settings.max_head_bytes,
            "head_timeout_seconds": settings.head_timeout_seconds,
            "body_idle_seconds": settings.body_idle_seconds,
            "max_pending_heads": settings.max_pending_heads,
            "pending": {},
        },
    )
