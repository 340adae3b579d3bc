"""A throw-away Redis behind Sentinel for the drill and the benchmark: a master, a replica and
three sentinels (Debian's redis-sentinel), each with its own config file, on free loopback
ports. Sentinel notices a dead master after DOWN_AFTER_MS and promotes the replica."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.redis_server import RedisDidNotStart, free_port

#: The name the sentinels monitor the master under.
MASTER_NAME = "twmaster"

#: Sentinels that must agree the master is down before one fails it over.
QUORUM = 2

#: How long a silent master is given before a sentinel thinks it down, in ms.
DOWN_AFTER_MS = 1000

#: How long a failover may take before the sentinels try again, in ms.
FAILOVER_TIMEOUT_MS = 3000


@dataclass
class SentinelCluster:
    workdir: Path
    master_port: int = 0
    replica_port: int = 0
    fsync: str = "everysec"  # the servers' appendfsync
    sentinel_ports: list[int] = field(default_factory=list)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER_NAME}/0"

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=5)

    def master_address(self) -> tuple[str, int] | None:
        """Where the sentinels say the master is (None while none of them answers)."""
        for port in self.sentinel_ports:
            try:
                client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
                host, master = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return host, int(master)
            except (redis.RedisError, TypeError, ValueError):
                continue
        return None

    def kill_master(self) -> None:
        """SIGKILL: no goodbye to the replica, whatever it had not yet received is gone."""
        self.processes["master"].kill()
        self.processes["master"].wait(timeout=10)

    def restart_old_master(self) -> None:
        """Start the killed master again (on its AOF); the sentinels make it a replica of the
        one they promoted. Returns once it replicates."""
        promoted = ("127.0.0.1", self.replica_port)
        _wait(lambda: self.master_address() == promoted, "the replica's promotion")
        _start_server(self, "master", self.master_port, [])
        _wait(
            lambda: (
                self.client(self.master_port).info("replication").get("master_link_status") == "up"
            ),
            "the old master to come back as a replica",
        )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def start_cluster(workdir: Path, fsync: str = "everysec") -> SentinelCluster:
    """Master and replica with AOF, three sentinels watching them; returns once the sentinels
    know the replica and each other (a failover is then possible)."""
    for program in ("redis-server", "redis-sentinel"):
        if shutil.which(program) is None:
            raise RedisDidNotStart(f"{program} is not installed; `make setup` installs it")
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = SentinelCluster(
        workdir, master_port=free_port(), replica_port=free_port(), fsync=fsync
    )
    try:
        _start_server(cluster, "master", cluster.master_port, [])
        _start_server(
            cluster,
            "replica",
            cluster.replica_port,
            ["--replicaof", "127.0.0.1", str(cluster.master_port)],
        )
        # The sentinels learn of the replica from the master's INFO, asked every 10 s: start
        # them once it is attached, so the first answer names it.
        _wait(lambda: _replica_attached(cluster), "the replica to attach to the master")
        for index in range(3):
            port = free_port()
            cluster.sentinel_ports.append(port)
            config = workdir / f"sentinel-{index}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {cluster.master_port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            cluster.processes[f"sentinel-{index}"] = subprocess.Popen(
                [shutil.which("redis-sentinel"), str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        _wait(lambda: _sentinels_ready(cluster), "three sentinels to know the replica")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_server(cluster: SentinelCluster, name: str, port: int, extra: list[str]) -> None:
    data = cluster.workdir / name
    data.mkdir(exist_ok=True)
    cluster.processes[name] = subprocess.Popen(
        [
            shutil.which("redis-server"),
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(data)),
            *("--appendonly", "yes", "--appendfsync", cluster.fsync),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def _wait(ready, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise RedisDidNotStart(f"timed out waiting for {what}")


def _replica_attached(cluster: SentinelCluster) -> bool:
    try:
        info = cluster.client(cluster.master_port).info("replication")
        return info.get("slave0", {}).get("state") == "online"
    except redis.RedisError:
        return False


def _sentinels_ready(cluster: SentinelCluster) -> bool:
    try:
        for port in cluster.sentinel_ports:
            state = redis.Redis(port=port, decode_responses=True).sentinel_master(MASTER_NAME)
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                return False
    except (redis.RedisError, KeyError, ValueError):
        return False
    return True
