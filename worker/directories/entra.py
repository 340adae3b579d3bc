"""Asking Microsoft Entra ID, through Microsoft Graph, about the people who downloaded tokens.

Each login is looked up as `GET /users/{UPN}?$select=...` inside Graph's `$batch` (at most 20
lookups in one `POST /v1.0/$batch`), `settings.concurrency` batches at once, with an app's
client-credentials token (worker/directories/entra_token.py). worker/directories/graph.py says
what each answer means.

Throttling: a whole batch answered 429/503/504 (or 5xx, or not answered at all) is sent again
after Graph's Retry-After (else a backoff of 1 s, 2 s ...); lookups answered 429 inside a batch
are sent again alone, after their own Retry-After. A Retry-After beyond `max_wait_s` is not
waited for: those logins are Unobserved. After 3 batches in a row fail that way the rest of the
call is not asked; when no login at all was observed, DirectoryUnreachable.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import structlog

from worker.config import DirectorySettings
from worker.directories.base import Observation, Unobserved, WatchedLogin
from worker.directories.entra_token import EntraToken, TokenUnavailable
from worker.directories.graph import Answer, Renew, Retry, answer_for, decode, failure, user_path
from worker.errors import DirectoryCredentialsRejected, DirectoryUnreachable
from worker.outbound import retry_after_s, tls_context

log = structlog.get_logger(__name__)

#: Most lookups Graph takes in one `$batch`.
BATCH_SIZE = 20
#: Batches in a row that fail (transport, 429, 5xx, through their retries) before the rest of
#: a call is not asked.
STOP_AFTER_FAILED_BATCHES = 3
#: First wait before a retry, in seconds; doubled for each further one.
BACKOFF_FIRST_S = 1.0
#: Share by which each backoff wait may grow at random.
BACKOFF_JITTER = 0.2
STOPPED = "the directory stopped answering"


class _Round:
    """One observe() call's answers, and what its failures were, shared by the batches."""

    def __init__(self, size: int):
        self.answers: list[Observation | Unobserved | None] = [None] * size
        self.lock = threading.Lock()
        self.failed_in_row = 0
        self.aborted = False
        self.observed = False
        self.only_transient = True
        self.first_why = ""

    def settle(self, index: int, answer: Observation | Unobserved, transient: bool = False):
        with self.lock:
            self.answers[index] = answer
            if isinstance(answer, Observation):
                self.observed = True
            else:
                self.first_why = self.first_why or answer.why
                self.only_transient = self.only_transient and transient

    def batch_done(self, failed: bool) -> None:
        with self.lock:
            self.failed_in_row = self.failed_in_row + 1 if failed else 0

    @property
    def stopped(self) -> bool:
        return self.failed_in_row >= STOP_AFTER_FAILED_BATCHES


class EntraClient:
    """A client of one Entra ID tenant's Microsoft Graph, for one app registration."""

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        *,
        settings: DirectorySettings,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float = 60,
        attempts: int = 3,
    ):
        self._graph = settings.graph_url.rstrip("/")
        self._host = httpx.URL(self._graph).host or self._graph
        self._concurrency = max(1, settings.concurrency)
        self._timeout_s = settings.timeout_s
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._attempts = max(1, attempts)
        self._count_lock = threading.Lock()
        self._requests = 0
        self._token = EntraToken(tenant_id, client_id, client_secret, settings, self._counted)
        self._http = httpx.Client(
            verify=tls_context(settings.ca_bundle),
            timeout=settings.timeout_s,
            follow_redirects=False,
            event_hooks={"request": [lambda _request: self._counted()]},
        )

    @property
    def requests_made(self) -> int:
        return self._requests

    def _counted(self) -> None:
        with self._count_lock:
            self._requests += 1

    def close(self) -> None:
        self._http.close()
        self._token.close()

    def __repr__(self) -> str:
        return f"<EntraClient {self._graph} {self._token!r}>"

    def observe(self, logins: Sequence[WatchedLogin]) -> list[Observation | Unobserved]:
        """One answer per login, in order. Raises DirectoryCredentialsRejected or
        DirectoryUnreachable (see the module docstring)."""
        logins = list(logins)
        if not logins:
            return []
        try:
            self._first_token()
            return self._observe(logins)
        except (DirectoryCredentialsRejected, DirectoryUnreachable) as exc:
            message = self._token.scrub(str(exc))
            log.warning("entra_failed", kind=type(exc).__name__, error=message)
            if message == str(exc):
                raise
            raise type(exc)(message) from None

    def _observe(self, logins: list[WatchedLogin]) -> list[Observation | Unobserved]:
        run = _Round(len(logins))
        starts = range(0, len(logins), BATCH_SIZE)
        batches = [{str(i): logins[i].login for i in range(s, s + BATCH_SIZE) if i < len(logins)}
                   for s in starts]  # fmt: skip
        with ThreadPoolExecutor(min(self._concurrency, len(batches))) as pool:
            futures = [pool.submit(self._batch, run, batch) for batch in batches]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                run.aborted = True
                raise
        if not run.observed and run.only_transient:
            raise DirectoryUnreachable(f"Microsoft Graph at {self._host}: {run.first_why}")
        assert all(answer is not None for answer in run.answers)
        return list(run.answers)  # type: ignore[arg-type]

    def _first_token(self) -> None:
        """A token before any lookup: a refusal is raised now, once, not per batch."""
        for attempt in range(1, self._attempts + 1):
            try:
                self._token.bearer()
                return
            except TokenUnavailable as exc:
                wait = self._wait(attempt, [exc.retry_after])
                log.warning("entra_token_unavailable", why=exc.why, attempt=attempt)
                if attempt == self._attempts or wait is None:
                    raise DirectoryUnreachable(
                        f"Entra ID ({self._token.login_host}): {exc.why}, {attempt} attempts"
                    ) from None
                self._sleep(wait)

    def _batch(self, run: _Round, pending: dict[str, str]) -> None:
        """Look up one batch's logins, retrying the lookups Graph asks to retry."""
        attempt, renewed, observed = 1, False, False
        while pending and not run.aborted:
            if run.stopped:
                self._give_up(run, pending, STOPPED)
                return
            answers, bearer = self._send(pending)
            retries = self._settle(run, pending, answers)
            observed = observed or len(retries) < len(pending)
            pending = {i: pending[i] for i in retries}
            if not pending:
                break
            if any(isinstance(a, Renew) for a in retries.values()):
                if renewed or bearer is None:
                    why = next(a.why for a in retries.values() if isinstance(a, Renew))
                    raise DirectoryCredentialsRejected(f"Microsoft Graph refused the token ({why})")
                log.info("entra_token_renewed", host=self._host)
                self._token.renew(bearer)
                renewed = True
                continue
            why = next(iter(retries.values())).why
            wait = self._wait(attempt, [a.retry_after for a in retries.values()])  # type: ignore[union-attr]
            if attempt == self._attempts or wait is None:
                self._give_up(run, pending, self._why_not(why, attempt, wait))
                break
            log.info("entra_retry", host=self._host, why=why, attempt=attempt, wait_s=wait)
            self._sleep(wait)
            attempt += 1
        run.batch_done(failed=not observed and not run.aborted)

    def _settle(
        self, run: _Round, pending: dict[str, str], answers: dict[str, Answer]
    ) -> dict[str, Retry | Renew]:
        """Record the final answers; return the ones to ask again."""
        again: dict[str, Retry | Renew] = {}
        for key, login in pending.items():
            answer = answers.get(key) or Unobserved(login, "Graph's $batch answer left it out")
            if isinstance(answer, Retry | Renew):
                again[key] = answer
            else:
                if isinstance(answer, Unobserved):
                    log.warning("entra_unobserved", login=login, why=answer.why)
                run.settle(int(key), answer)
        return again

    def _give_up(self, run: _Round, pending: dict[str, str], why: str) -> None:
        log.warning("entra_batch_unobserved", host=self._host, logins=len(pending), why=why)
        for key, login in pending.items():
            run.settle(int(key), Unobserved(login, why), transient=True)

    def _why_not(self, why: str, attempt: int, wait: float | None) -> str:
        if wait is None:
            return f"{why}, asking to wait longer than {self._max_wait_s:g} s"
        return f"{why}, {attempt} attempts"

    def _send(self, pending: dict[str, str]) -> tuple[dict[str, Answer], str | None]:
        """POST one `$batch`; the answer for each sub-request id, and the bearer used."""
        try:
            bearer = self._token.bearer()
        except TokenUnavailable as exc:
            return {key: Retry(f"Entra ID: {exc.why}", exc.retry_after) for key in pending}, None
        requests = [{"id": key, "method": "GET", "url": user_path(login)}
                    for key, login in pending.items()]  # fmt: skip
        try:
            response = self._http.post(
                f"{self._graph}/v1.0/$batch",
                json={"requests": requests},
                headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"},
            )
        except httpx.TimeoutException:
            why = f"no answer from {self._host} within {self._timeout_s:g} s"
            return {key: Retry(why) for key in pending}, bearer
        except httpx.TransportError as exc:  # its text may name the URL: only its kind is kept
            why = f"cannot reach {self._host} ({type(exc).__name__})"
            return {key: Retry(why) for key in pending}, bearer
        body = decode(response.content)
        if response.status_code != 200:
            return {
                key: failure(login, response.status_code, response.headers, body)
                for key, login in pending.items()
            }, bearer
        return self._read_batch(pending, body), bearer

    def _read_batch(self, pending: dict[str, str], body: object) -> dict[str, Answer]:
        responses = body.get("responses") if isinstance(body, dict) else None
        if not isinstance(responses, list):
            return {
                k: Unobserved(v, "Graph's $batch answer is unreadable") for k, v in pending.items()
            }
        answers: dict[str, Answer] = {}
        for sub in responses:
            if not isinstance(sub, dict) or str(sub.get("id")) not in pending:
                continue
            key = str(sub["id"])
            headers = sub.get("headers") if isinstance(sub.get("headers"), dict) else {}
            status = sub.get("status") if isinstance(sub.get("status"), int) else 0
            answers[key] = answer_for(pending[key], status, headers, sub.get("body"))
        return answers

    def _wait(self, attempt: int, retry_afters: list[str | None]) -> float | None:
        """Graph's longest Retry-After (None when beyond max_wait_s), else a backoff."""
        now = datetime.now(UTC)
        asked = [s for s in (retry_after_s(v, now) for v in retry_afters if v) if s is not None]
        if asked:
            wait = max(asked)
            return None if wait > self._max_wait_s else wait
        backoff = BACKOFF_FIRST_S * 2 ** (attempt - 1)
        return round(backoff * (1 + BACKOFF_JITTER * random.random()), 3)
