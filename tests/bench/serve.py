"""What the intake benchmarks share: a `tokenwarden serve` process on a free port, a source to
post to, and the CPU time a process used (to show which side of the wire was busy)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

from tests.bench.common import BIN, worker_env
from tests.redis_server import free_port
from worker.bootstrap import App
from worker.services.sources import add_source
from worker.timefmt import utc_now

#: Longest `tokenwarden serve` may take to answer /readyz.
START_TIMEOUT_S = 30


class Serve:
    """`tokenwarden serve` in its own process, logging at info as in production (to a file:
    what it said is shown if it does not start)."""

    def __init__(self, url: str, master_key: str, workdir: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._log = workdir / f"serve-{self.port}.log"
        env = worker_env(
            url,
            master_key,
            workdir,
            TOKENWARDEN_HTTP_LISTEN=f"127.0.0.1:{self.port}",
            TOKENWARDEN_LOG_LEVEL="info",
        )
        with self._log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "tokenwarden"), "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def __enter__(self) -> Serve:
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tokenwarden serve exited: {self._tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(
            f"tokenwarden serve was not ready in {START_TIMEOUT_S} s: {self._tail()}"
        )

    def _tail(self) -> str:
        return self._log.read_text(errors="replace")[-2000:]

    def cpu_s(self) -> float:
        return process_cpu_s(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
        self.process.wait(timeout=30)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def new_source(app: App, name: str, kind: str) -> str:
    """A source of `kind`; its secret, as `tokenwarden sources add` prints it."""
    return add_source(app.sources, name, kind, now=utc_now()).secret


def load_average() -> str:
    """The 1-minute load average, and the cores it is out of: other work on the machine (it
    is shared) shows in the figures, so they are reported with it."""
    return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def raise_unless_ok(response: httpx.Response, what: str) -> None:
    """A refused request fails the benchmark: errors are not measured as latencies."""
    if not response.is_success:
        raise RuntimeError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
