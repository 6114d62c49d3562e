"""`UvicornThread`: uvicorn serving an app on a 127.0.0.1 port in a daemon thread.

The thread runs its own event loop (uvicorn installs no signal handlers outside the main thread),
so a synchronous test or a fixture can start a real server next to its own loop. Used by the
proxy tests' `ServerThread` (`upstreams.py`) and, through `ServedApp`, the JWT API, the DPoP API
and the malicious provider.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn
from starlette.types import ASGIApp


class UvicornThread:
    def __init__(self, app: ASGIApp, *, port: int, name: str = "test server", **config: Any) -> None:
        self.port = port
        self.name = name
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **config))
        self.thread = threading.Thread(target=self.server.run, name=f"{name}-{port}", daemon=True)

    def start(self, timeout: float = 10) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class ServedApp:
    """A test's Starlette app on its own port: `start()` serves it in a `UvicornThread` (no
    WebSockets, no lifespan), `stop()` ends that. Subclasses set `app`, `port` and `server_name`."""

    app: ASGIApp
    port: int
    server_name: str
    _server: UvicornThread | None = None

    def start(self) -> None:
        self._server = UvicornThread(
            self.app, port=self.port, name=self.server_name, log_level="warning", ws="none", lifespan="off"
        )
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
