"""Run the HTTP server inside this process, on a background thread (the demo, benchmarks)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from .server import ServerConfig, create_app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(engine, config: ServerConfig | None = None, host: str = "127.0.0.1",
            timeout: float = 300.0) -> Iterator[str]:
    """Serve `engine` until the block ends; yields the base URL once the server is ready."""
    app = create_app(engine, config)
    port = free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="i2i-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not (server.started and app.state.service.ready):      # ready after warm-up
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the in-process server did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
