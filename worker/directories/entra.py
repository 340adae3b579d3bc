"""Asking Microsoft Entra ID, through Microsoft Graph, about the people who downloaded tokens.

Each login is looked up as `GET /users/{UPN}?$select=...` inside Graph's `$batch` (at most 20
lookups in one `POST /v1.0/$batch`), `settings.concurrency` batches at once, with an app's
client-credentials token (worker/directories/entra_token.py). worker/directories/graph.py says
what each answer means.

Throttling: a whole batch answered 429/503/504 (or 5xx, or not answered at all) is sent again
after Graph's Retry-After (else a backoff of 1 s, 2 s ...); lookups answered 429 inside a batch
are sent again alone, after their own Retry-After. A Retry-After beyond `max_wait_s` is not
waited for: those logins are Unobserved.

A batch fails when Graph answered none of its lookups: 429/5xx/timeouts through their
retries, and as much a proxy's error page, a non-JSON answer, an unexpected status, a 401/403
without Graph's error, a redirect (never followed), an answer larger than 4 MiB. Batches are
sent one at a time until Graph has answered one (and again while batches fail); after 3 in a
row fail the rest of the call is not asked, and when Graph answered no batch at all,
DirectoryUnreachable. One warning per call sums up the logins left unobserved.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import structlog

from worker.config import DirectorySettings
from worker.directories.base import Observation, Unobserved, WatchedLogin
from worker.directories.entra_token import EntraToken, TokenUnavailable
from worker.directories.graph import (
    Answer,
    Renew,
    Retry,
    answer_for,
    decode,
    failure,
    graph_error,
    user_path,
)
from worker.errors import DirectoryCredentialsRejected, DirectoryUnreachable
from worker.outbound import retry_after_s, tls_context

log = structlog.get_logger(__name__)

#: Most lookups Graph takes in one `$batch`.
BATCH_SIZE = 20
#: Batches in a row that fail (none of their lookups answered by Graph) before the rest of a
#: call is not asked.
STOP_AFTER_FAILED_BATCHES = 3
#: First wait before a retry, in seconds; doubled for each further one.
BACKOFF_FIRST_S = 1.0
#: Share by which each backoff wait may grow at random.
BACKOFF_JITTER = 0.2
STOPPED = "the directory stopped answering"
#: Largest `$batch` answer read, in bytes (20 users of a few KiB each).
MAX_BATCH_BYTES = 4 * 1024 * 1024


class _Round:
    """One observe() call's answers, and how its batches went, shared by the batches. Until
    Graph has answered a batch, and while batches fail, one batch at a time (`turn()`)."""

    def __init__(self, size: int):
        self.answers: list[Observation | Unobserved | None] = [None] * size
        self.lock = threading.Lock()
        self.probe = threading.Lock()
        self.failed_in_row = 0
        self.aborted = False
        self.answered = False
        self.unobserved = 0
        self.first_why = ""

    def settle(self, index: int, answer: Observation | Unobserved):
        with self.lock:
            self.answers[index] = answer
            if isinstance(answer, Unobserved):
                self.unobserved += 1
                self.first_why = self.first_why or answer.why

    def batch_done(self, failed: bool) -> None:
        with self.lock:
            self.failed_in_row = self.failed_in_row + 1 if failed else 0
            self.answered = self.answered or not failed

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        if self.failed_in_row or not self.answered:
            with self.probe:
                if self.failed_in_row or not self.answered:  # this batch is the probe
                    yield
                    return
        yield

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
            futures = [pool.submit(self._batch_in_turn, run, batch) for batch in batches]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                run.aborted = True
                raise
        if not run.answered:
            raise DirectoryUnreachable(f"Microsoft Graph at {self._host}: {run.first_why}")
        if run.unobserved:  # one line per call, the first why
            log.warning("entra_unobserved", host=self._host, unobserved=run.unobserved,
                        asked=len(logins), why=run.first_why)  # fmt: skip
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
                log.info("entra_token_unavailable", why=exc.why, attempt=attempt)
                if attempt == self._attempts or wait is None or exc.final:
                    raise DirectoryUnreachable(
                        f"Entra ID ({self._token.login_host}): {exc.why}, {attempt} attempts"
                    ) from None
                self._sleep(wait)

    def _batch_in_turn(self, run: _Round, pending: dict[str, str]) -> None:
        with run.turn():
            self._batch(run, pending)

    def _batch(self, run: _Round, pending: dict[str, str]) -> None:
        """Look up one batch's logins, retrying the lookups Graph asks to retry."""
        attempt, renewed, heard = 1, False, False
        while pending and not run.aborted:
            if run.stopped:
                self._give_up(run, pending, STOPPED)
                return
            answers, bearer, answered = self._send(pending)
            retries = self._settle(run, pending, answers)
            heard = heard or answered
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
        run.batch_done(failed=not heard and not run.aborted)

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
                    log.debug("entra_unobserved_login", login=login, why=answer.why)
                run.settle(int(key), answer)
        return again

    def _give_up(self, run: _Round, pending: dict[str, str], why: str) -> None:
        log.debug("entra_batch_unobserved", host=self._host, logins=len(pending), why=why)
        for key, login in pending.items():
            run.settle(int(key), Unobserved(login, why))

    def _why_not(self, why: str, attempt: int, wait: float | None) -> str:
        if wait is None:
            return f"{why}, asking to wait longer than {self._max_wait_s:g} s"
        return f"{why}, {attempt} attempts"

    def _send(self, pending: dict[str, str]) -> tuple[dict[str, Answer], str | None, bool]:
        """POST one `$batch`: the answer for each sub-request id, the bearer used, and whether
        Graph answered any lookup itself (a user, or its own error about one)."""
        try:
            bearer = self._token.bearer()
        except TokenUnavailable as exc:
            why = f"Entra ID: {exc.why}"
            if exc.final:
                return {k: Unobserved(v, why) for k, v in pending.items()}, None, False
            return {key: Retry(why, exc.retry_after) for key in pending}, None, False
        try:
            status, headers, content = self._post(pending, bearer)
        except httpx.TimeoutException:
            why = f"no answer from {self._host} within {self._timeout_s:g} s"
            return {key: Retry(why) for key in pending}, bearer, False
        except httpx.TransportError as exc:  # its text may name the URL: only its kind is kept
            why = f"cannot reach {self._host} ({type(exc).__name__})"
            return {key: Retry(why) for key in pending}, bearer, False
        except httpx.DecodingError:
            content = None
        if content is None:
            why = f"Graph's $batch answer is larger than {MAX_BATCH_BYTES >> 20} MiB or undecodable"
            return {k: Unobserved(v, why) for k, v in pending.items()}, bearer, False
        body = decode(content)
        if status != 200:
            answers = {k: failure(v, status, headers, body) for k, v in pending.items()}
            return answers, bearer, False
        answers, heard = self._read_batch(pending, body)
        return answers, bearer, heard

    def _post(
        self, pending: dict[str, str], bearer: str
    ) -> tuple[int, httpx.Headers, bytes | None]:
        """Graph's answer to one `$batch`: its status, headers, and body (None: larger than
        MAX_BATCH_BYTES), read within one deadline (httpx's timeouts are per read)."""
        requests = [{"id": key, "method": "GET", "url": user_path(login)}
                    for key, login in pending.items()]  # fmt: skip
        deadline = time.monotonic() + self._timeout_s
        with self._http.stream(
            "POST",
            f"{self._graph}/v1.0/$batch",
            json={"requests": requests},
            headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"},
        ) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_BATCH_BYTES:
                    return response.status_code, response.headers, None
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the answer came too slowly")
            return response.status_code, response.headers, bytes(body)

    def _read_batch(self, pending: dict[str, str], body: object) -> tuple[dict[str, Answer], bool]:
        """Each lookup's answer, and whether Graph answered any itself."""
        responses = body.get("responses") if isinstance(body, dict) else None
        if not isinstance(responses, list):
            why = "Graph's $batch answer is unreadable"
            return {k: Unobserved(v, why) for k, v in pending.items()}, False
        answers: dict[str, Answer] = {}
        heard = False
        for sub in responses:
            if not isinstance(sub, dict) or str(sub.get("id")) not in pending:
                continue
            key = str(sub["id"])
            headers = sub.get("headers") if isinstance(sub.get("headers"), dict) else {}
            status = sub.get("status") if isinstance(sub.get("status"), int) else 0
            answers[key] = answer_for(pending[key], status, headers, sub.get("body"))
            graphs = status == 200 or graph_error(sub.get("body"))[0] is not None
            heard = heard or (graphs and not isinstance(answers[key], Retry | Renew))
        return answers, heard

    def _wait(self, attempt: int, retry_afters: list[str | None]) -> float | None:
        """Graph's longest Retry-After (None when beyond max_wait_s), else a backoff."""
        now = datetime.now(UTC)
        asked = [s for s in (retry_after_s(v, now) for v in retry_afters if v) if s is not None]
        if asked:
            wait = max(asked)
            return None if wait > self._max_wait_s else wait
        backoff = BACKOFF_FIRST_S * 2 ** (attempt - 1)
        return round(backoff * (1 + BACKOFF_JITTER * random.random()), 3)
