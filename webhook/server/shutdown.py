"""Graceful shutdown on SIGTERM: report not ready, drain, stop accepting, finish in-flight requests, exit 0.

Kubernetes sends SIGTERM while the Pod may still be an endpoint of the Service, and the apiserver keeps
its keep-alive connections to it. So, on the first SIGTERM (or SIGINT):
1. /readyz answers 503 at once, and every answer carries `connection: close`, so the apiserver's
   connections move to the other replicas one by one instead of being cut;
2. for `drain_seconds` the server keeps answering whatever still arrives;
3. then uvicorn's graceful shutdown: stop accepting, close idle connections, let in-flight requests
   finish (at most `timeout_graceful_shutdown`), and return, so `serve` exits 0.
A second signal skips the rest of the drain; a third SIGINT stops without waiting for in-flight requests.
uvicorn itself would re-raise the signal after its shutdown, which ends the process with -15, not 0.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import Callable

import uvicorn

from webhook.logs import event

DEFAULT_DRAIN_SECONDS = 5.0  # endpoint removal reaches kube-proxy within a few seconds
DEFAULT_GRACE_SECONDS = 10  # longest in-flight request is the apiserver's webhook timeout (≤ 30 s, default 10)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_drain: Callable[[], None], drain_seconds: float):
        super().__init__(config)
        self.on_drain = on_drain
        self.drain_seconds = drain_seconds
        self.drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        name = signal.Signals(sig).name
        if self.drain_until is None:
            self.on_drain()
            self.drain_until = time.monotonic() + self.drain_seconds
            event(logging.INFO, "draining before shutdown", signal=name, drain_seconds=self.drain_seconds)
        elif not self.should_exit:
            self.should_exit = True
            event(logging.INFO, "drain cut short", signal=name)
        elif sig == signal.SIGINT:
            self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = True
        return await super().on_tick(counter)
