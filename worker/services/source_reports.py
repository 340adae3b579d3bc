"""How a polling source's rounds went, recorded for `sources list` and `status`, and reported
to people and systems when it starts failing and when it recovers: each once, as an outgoing
event applied like a decision (its duplicate marker names the source and since when it fails,
so a crash between the steps, or two replicas, never report it twice)."""

from __future__ import annotations

from datetime import datetime

import structlog

from events import catalog
from events.cloudevent import outgoing_event, stable_id
from worker.errors import DirectoryError, DirectoryUnreachable
from worker.intake.sources import Source
from worker.records import to_ms
from worker.rules.decision import AuditEntry, Decision
from worker.store.protocol import Store
from worker.store.source_store import PollState, SourceStore
from worker.timefmt import format_rfc3339

log = structlog.get_logger(__name__)

#: Unreachable rounds in a row before the source is reported failing (one is a blip; a
#: refused credential or a misconfiguration is reported at once).
UNREACHABLE_ROUNDS_BEFORE_FAILING = 3


class SourceReports:
    def __init__(self, store: Store, sources: SourceStore):
        self._store = store
        self._sources = sources

    def conclude(
        self, source: Source, error: DirectoryError | None, summary: dict[str, int], now: datetime
    ) -> PollState:
        if error is None:
            state = self._sources.record_round(source.name, now, summary)
            if state.failing_since is not None:
                self._report(catalog.SOURCE_RECOVERED, source, state, state.error or "", now)
                self._sources.clear_failing(source.name)
            return state
        state = self._sources.record_round(source.name, now, None)
        log.warning("directory_round_failed", source=source.name, error=str(error))
        blip = isinstance(error, DirectoryUnreachable) and (
            state.failures < UNREACHABLE_ROUNDS_BEFORE_FAILING
        )
        if state.failing_since is None and blip:
            return state
        since = self._sources.mark_failing(source.name, now, str(error))
        failing = PollState(state.last_success, now, state.failures, since, str(error))
        self._report(catalog.SOURCE_FAILING, source, failing, str(error), now)
        return failing

    def _report(
        self, event_type: str, source: Source, state: PollState, error: str, now: datetime
    ) -> None:
        since = state.failing_since or now
        data = {
            "source": source.name,
            "kind": source.kind,
            "error": error,
            "failing_since": format_rfc3339(since),
            "last_success": format_rfc3339(state.last_success) if state.last_success else None,
        }
        decision = Decision(
            now=now,
            event_key=f"{event_type}\x00{source.name}\x00{to_ms(since)}",
            audit=AuditEntry("source", {"type": event_type, **data}),
            outgoing=[
                outgoing_event(
                    event_type,
                    event_id=stable_id(event_type, source.name, str(to_ms(since))),
                    subject=source.name,
                    time=now,
                    data=data,
                    source=catalog.SOURCE_DIRECTORIES,
                )
            ],
            results=[{"action": event_type.rsplit(".", 1)[-1], "source": source.name}],
        )
        applied = self._store.events.apply(decision)
        if applied.outcome == "applied":
            log.warning("directory_source_" + event_type.rsplit(".", 1)[-1], **data)
