"""A scripted directory for the tests of what a round does with answers (the services, the
scheduler's rounds): it stands in for a directory's service only, answering from a dict; the
clients themselves are tested against fakes that check credentials (tests/*_fake.py)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from worker.directories.base import Observation, Unobserved, WatchedLogin
from worker.errors import DirectoryError


class ScriptedDirectory:
    def __init__(self) -> None:
        self.answers: dict[str, Observation | Unobserved] = {}
        #: Raised by the next observe() calls, when set.
        self.error: DirectoryError | None = None
        self.asked: list[WatchedLogin] = []
        #: How many logins each observe() call asked about.
        self.calls: list[int] = []
        self.requests_made = 0
        self.closed = 0
        self._lock = threading.Lock()

    def observe(self, logins: Sequence[WatchedLogin]) -> list[Observation | Unobserved]:
        with self._lock:
            self.asked += logins
            self.calls.append(len(logins))
            self.requests_made += len(logins)
        if self.error is not None:
            raise self.error
        return [
            self.answers.get(w.login.lower(), Observation(w.login, True, status="ACTIVE"))
            for w in logins
        ]

    def close(self) -> None:
        self.closed += 1

    def factory(self, source, credentials, settings, now):
        assert credentials  # the sealed credential was opened
        return self
