"""Connection limits uvicorn's HTTP protocol lacks: a deadline for reading a request, and a bound on its head.

uvicorn (httptools) times out only idle keep-alive connections *between* requests: a client that opens a
connection and sends nothing, or trickles a request a byte at a time, or sends headers without end,
holds a connection (and memory) for as long as it likes. This subclass closes each of those:
- a new connection that sends nothing is closed after the keep-alive idle timeout, like an idle one;
- a request must arrive whole (head and body) within `read_timeout` of its first byte, else 408;
- a request head (request line and headers) larger than `max_head_bytes` gets 431.
Both answers carry a JSON error like every other refusal of the webhook, and close the connection.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from webhook.logs import event

DEFAULT_READ_TIMEOUT = 10.0  # the apiserver's default webhook timeout; it sends a whole review at once
DEFAULT_MAX_HEAD_BYTES = 32 * 1024  # an apiserver's request head is well under 1 KiB

REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def guarded_protocol(read_timeout: float = DEFAULT_READ_TIMEOUT,
                     max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES) -> type[HttpToolsProtocol]:
    """The protocol class to give uvicorn.Config(http=…), with these limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,),
                {"read_timeout": read_timeout, "max_head_bytes": max_head_bytes})


class HeadTooLarge(Exception):
    pass


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    read_timeout = DEFAULT_READ_TIMEOUT
    max_head_bytes = DEFAULT_MAX_HEAD_BYTES

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.head_bytes = 0  # bytes received since the last request head was complete (a head in many chunks)
        self.head_size = 0  # the current head's URL and headers as parsed (a head in one chunk)
        self.head_too_large = False
        self.in_body = False  # between a request's head and the end of its body
        self.read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Until the first byte, a new connection is an idle one (data_received disarms this).
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.in_body:
            self.head_bytes += len(data)
        super().data_received(data)
        if not self.in_body and self.head_bytes > self.max_head_bytes and not self.transport.is_closing():
            self._refuse(431, f"the request head is larger than {self.max_head_bytes} bytes")

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > self.max_head_bytes:
            self.head_too_large = True
            raise HeadTooLarge  # stops the parser; uvicorn then calls send_400_response

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what is not HTTP at all, as JSON like every other refusal."""
        if self.head_too_large:
            return self._refuse(431, f"the request head is larger than {self.max_head_bytes} bytes")
        self._refuse(400, "the request is not valid HTTP/1.1")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_size = 0
        self._disarm_read_deadline()
        self.read_deadline = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def on_headers_complete(self) -> None:
        self.in_body, self.head_bytes = True, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_body, self.head_bytes = False, 0
        self._disarm_read_deadline()
        super().on_message_complete()

    def _read_timed_out(self) -> None:
        self.read_deadline = None
        if not self.transport.is_closing():
            self._refuse(408, f"the request did not arrive whole within {self.read_timeout:g} s")

    def _disarm_read_deadline(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _refuse(self, status: int, message: str) -> None:
        """Answers with a JSON error unless a response is half sent, then closes the connection."""
        event(logging.WARNING, "connection refused", status=status, reason=message, client=_address(self.client))
        cycle = self.cycle  # the current request's, or the previous one's while a new head is being read
        in_progress = cycle is not None and not cycle.response_complete
        if not (in_progress and cycle.response_started):
            body = orjson.dumps({"error": message, "code": status})
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, REASONS[status], len(body), body))
        if in_progress:
            cycle.disconnected = True  # the app waiting for the rest of the body gets http.disconnect
            cycle.message_event.set()
        self.transport.close()


def _address(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"
