"""The HTTP process around the app: uvicorn with connection limits, a header timeout, and a
drain on SIGTERM that answers every request already sent.

Limits (i2i-serve flags): --max-connections (more are answered 503 at once), --header-timeout-s
(a connection that has not finished sending its request line and headers by then is closed:
slowloris and idle sockets cannot pile up), --keep-alive-s (idle keep-alive connections are
closed after it). The body read timeout and the in-flight body budget live in the app (server.py).

On SIGTERM the server stops accepting at once, waits `drain_s` for requests already in its
sockets to be read (uvicorn alone would close those connections as idle and reset them), then
shuts down as uvicorn does: running requests finish, the batcher drains, exit 0.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    header_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    drain_s: float = 1.0


class TimedProtocol(HttpToolsProtocol):
    """httptools' HTTP/1.1 protocol with a deadline for each request's head."""

    header_timeout_s = Limits.header_timeout_s

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_late)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if getattr(self, "_head_timer", None) is None:      # the next request on the socket
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_late)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
        self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM/SIGINT stops accepting, waits `drain_s` for the
    requests already sent, then shuts down gracefully."""

    def __init__(self, config: uvicorn.Config, drain_s: float):
        super().__init__(config)
        self.drain_s, self.draining = drain_s, False

    def handle_exit(self, sig, frame) -> None:
        if self.draining:
            return super().handle_exit(sig, frame)
        self.draining = True
        self._captured_signals.append(sig)
        for server in getattr(self, "servers", []):
            server.close()                              # no new connections from here on
        asyncio.get_event_loop().call_later(self.drain_s, self._finish)

    def _finish(self) -> None:
        self.should_exit = True


def serve(app, host: str, port: int, limits: Limits) -> None:
    """Run `app` until SIGTERM/SIGINT, with `limits`."""
    protocol = type("Timed", (TimedProtocol,), {"header_timeout_s": limits.header_timeout_s})
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", http=protocol,
                            limit_concurrency=limits.max_connections,
                            timeout_keep_alive=max(1, round(limits.keep_alive_s)),
                            timeout_graceful_shutdown=60)
    DrainingServer(config, limits.drain_s).run()
