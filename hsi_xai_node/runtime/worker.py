"""Latest-frame-only processing for live use: never a queue.

Frames that arrive while one is being processed replace each other in a single slot;
every replaced frame is counted as dropped. Bad input (an `InputError`) is counted by
kind and reported, and the worker carries on with the next frame.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError


@dataclass
class WorkerStats:
    received: int = 0
    processed: int = 0
    dropped: int = 0
    errors: Counter = field(default_factory=Counter)  # error kind -> count
    last_error: str = ""
    busy_s: float = 0.0


class LatestFrameWorker:
    def __init__(self, process: Callable[[Any], Any], on_result: Callable[[Any, Any], None],
                 on_error: Callable[[Any, Exception], None] | None = None, name: str = "hsi-xai-worker"):
        self._process, self._on_result, self._on_error = process, on_result, on_error
        self._cv = threading.Condition()
        self._slot: Any = None
        self._has_frame = False
        self._running = True
        self.stats = WorkerStats()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Offer a frame; returns False when it replaced one still waiting (that one is dropped)."""
        with self._cv:
            self.stats.received += 1
            replaced = self._has_frame
            if replaced:
                self.stats.dropped += 1
            self._slot, self._has_frame = item, True
            self._cv.notify()
            return not replaced

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._running and not self._has_frame:
                    self._cv.wait()
                if not self._running:
                    return
                item, self._slot, self._has_frame = self._slot, None, False
            t0 = time.perf_counter()
            try:
                result = self._process(item)
            except InputError as exc:  # bad input: count it, report it, carry on
                with self._cv:
                    self.stats.errors[type(exc).__name__] += 1
                    self.stats.last_error = str(exc)
                if self._on_error:
                    self._on_error(item, exc)
                continue
            finally:
                self.stats.busy_s += time.perf_counter() - t0
            with self._cv:
                self.stats.processed += 1
            self._on_result(item, result)

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait until no frame is pending or in flight (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cv:
                done = not self._has_frame and self.stats.processed + sum(self.stats.errors.values()) \
                    + self.stats.dropped == self.stats.received
            if done:
                return True
            time.sleep(0.005)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._running = False
            self._cv.notify()
        self._thread.join(timeout)
