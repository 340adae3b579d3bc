"""Waiting for SIGINT/SIGTERM safely.

A signal handler runs between two bytecodes of the main thread, which may be holding a lock
(a logging handler's, an Event's); taking any lock in the handler can deadlock. So the handler
only records the signal, and the main thread polls for it.
"""

from __future__ import annotations

import signal
import time

#: How often the main thread looks for a stop request, in seconds.
POLL_S = 0.2


class StopSignals:
    def __init__(self, *signums: int):
        self.received: list[int] = []
        for signum in signums or (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._record)

    def _record(self, signum: int, _frame: object) -> None:
        self.received.append(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.received[0]).name if self.received else ""

    def wait(self, seconds: float | None = None) -> bool:
        """Sleep until a stop signal arrives (True) or `seconds` pass (False)."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self.received:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(
                POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            )
        return True
