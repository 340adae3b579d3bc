"""Every setting, read once from the environment at start-up into one frozen object.

`Settings.from_env()` is the only reader of the environment; `App` carries what it returns,
and every part (worker, notifications, scheduler) takes its section from there. Each value is
read by the parser for its kind (worker/environment.py); unset or blank means the default.

Core
REDIS_URL                  state and broker           default redis://127.0.0.1:6379/0
                           (redis://, rediss://, unix://, or behind Sentinel
                           redis+sentinel://host1:26379,host2:26379/MASTER/0, rediss+sentinel://)
TOKENWARDEN_REDIS_WAIT_REPLICAS    replicas an acknowledged write (an event enqueued, a batch of
                                   decisions) waits for with Redis WAIT; 0: off      default 0
TOKENWARDEN_REDIS_WAIT_TIMEOUT_MS  longest it waits; fewer replicas by then: a warning, the
                                   write stands on the master                     default 1000
TOKENWARDEN_DATA_DIR       local files (master.key)   default ./var
TOKENWARDEN_MASTER_KEY     encryption at rest: keys separated by commas, the primary first;
                           when unset, <data dir>/master.key is used (created on first use)
TOKENWARDEN_LOG_LEVEL      debug, info, warning, error          default info
TOKENWARDEN_LOG_FORMAT     json, console or auto (console on a terminal)   default auto
TOKENWARDEN_WORKER_PROCESSES   worker processes `tokenwarden worker` starts     default 2
TOKENWARDEN_WORKER_THREADS     threads per worker process                       default 2
TOKENWARDEN_POLL_INTERVAL_MS   longest an idle worker waits before it looks for
                               messages again (bounds the latency)              default 50
TOKENWARDEN_HEARTBEAT_TIMEOUT  seconds without a heartbeat after which a worker is
                               presumed dead and its messages are recovered     default 8

Notifications (webhooks, e-mail)
TOKENWARDEN_WEBHOOK_TIMEOUT         seconds a receiver has to answer          default 10
TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE  waits before each retry, seconds          default
                                    5,300,1800,7200,18000,36000,36000 (Standard Webhooks)
TOKENWARDEN_WEBHOOK_RETRY_JITTER    share by which each wait may vary         default 0.1
TOKENWARDEN_SMTP_HOST               SMTP server for e-mail; unset = no e-mail
TOKENWARDEN_SMTP_PORT               default 587 with STARTTLS, else 25
TOKENWARDEN_SMTP_STARTTLS           true/false                                default true
TOKENWARDEN_SMTP_USERNAME, TOKENWARDEN_SMTP_PASSWORD   login, when both are set
TOKENWARDEN_SMTP_FROM               sender address                  default tokenwarden@<host>

Scheduler (plain data here, so that worker/ never imports scheduler/)
TOKENWARDEN_EXPIRY_THRESHOLDS    days before expiry to warn at     default 120,60,30,14,7,3,1
TOKENWARDEN_SCAN_INTERVAL        seconds between scans              default 3600
TOKENWARDEN_SCHEDULER_LEASE_TTL  seconds a silent leader keeps the lease; it is renewed every
                                 third of that, and another replica takes over within
                                 about 1.33x it                     default 15

Apple's device enrollment service
TOKENWARDEN_APPLE_URL               its base URL            default https://mdmenrollment.apple.com
TOKENWARDEN_APPLE_CHECK_INTERVAL    seconds between two checks of each token, spread over the
                                    interval; 0 turns the scheduled checks off    default 21600
TOKENWARDEN_APPLE_CONCURRENCY       checks at once, at most                        default 4
TOKENWARDEN_APPLE_TIMEOUT           seconds Apple has to answer a request          default 10

Directories polled for the people who downloaded tokens (`sources add --kind okta-api|entra|
google`; Okta's URL is each source's own --org-url). Each must be https (http only on loopback)
TOKENWARDEN_ENTRA_LOGIN_URL         Entra ID's sign-in      default https://login.microsoftonline.com
TOKENWARDEN_GRAPH_URL               Microsoft Graph         default https://graph.microsoft.com
TOKENWARDEN_GOOGLE_TOKEN_URL        Google's OAuth 2.0 token endpoint
                                                        default https://oauth2.googleapis.com/token
TOKENWARDEN_GOOGLE_ADMIN_URL        Google's Admin SDK      default https://admin.googleapis.com
TOKENWARDEN_DIRECTORY_TIMEOUT       seconds a directory has to answer a request    default 10
TOKENWARDEN_DIRECTORY_CONCURRENCY   requests at once to one directory              default 4

Outgoing HTTPS (Apple, webhooks, directories)
TOKENWARDEN_CA_BUNDLE               a PEM file of CA certificates trusted besides the system's
                                    (a lab's CA, a TLS-inspecting proxy's)      default: none

The HTTP intake (`tokenwarden serve`)
TOKENWARDEN_HTTP_LISTEN             host:port it listens on              default 127.0.0.1:8080
TOKENWARDEN_HTTP_TRUSTED_PROXIES    addresses (or networks) of the reverse proxies whose
                                    X-Forwarded-For / -Proto are believed, comma separated;
                                    * believes any                   default: none
TOKENWARDEN_METRICS_TOKEN_SERIES    current tokens up to which `/metrics` has series per token
                                    (above it, only counts by days left); 0 = never
                                                                     default 10000
TOKENWARDEN_CALENDAR_TOKEN          secret of the feed `/calendar/renewals.ics` (32 to 256 of
                                    A-Z a-z 0-9 - _ . ~); unset: the feed is not served (404)

The web pages under /ui/ (TOKENWARDEN_UI=on; TOKENWARDEN_UI_TRUSTED_USER_HEADER,
TOKENWARDEN_UI_SESSION_LIFETIME): see worker/config_ui.py
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worker.config_ui import UiSettings, read_calendar_token, read_ui
from worker.environment import Environment, redact_url
from worker.notify.schedule import DEFAULT_JITTER, DEFAULT_SCHEDULE_S

#: Where tokenwarden looks for Redis when REDIS_URL is unset (the Redis `make run` starts).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

#: Longest a write waits for its replicas when TOKENWARDEN_REDIS_WAIT_REPLICAS is set, in ms.
DEFAULT_WAIT_TIMEOUT_MS = 1000

#: Local state (the master key file, the dev Redis's AOF) when TOKENWARDEN_DATA_DIR is unset.
DEFAULT_DATA_DIR = "./var"

#: Worker defaults, sized for a 2-core machine. A thread decides a whole batch of events in a
#: few Redis round trips, so two threads a process keep a core busy.
DEFAULT_WORKER_PROCESSES = 2
DEFAULT_WORKER_THREADS = 2
DEFAULT_POLL_INTERVAL_MS = 50
DEFAULT_HEARTBEAT_TIMEOUT_S = 8

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")

#: Seconds a webhook receiver has to answer.
DEFAULT_WEBHOOK_TIMEOUT_S = 10.0

#: Longest wait between two webhook attempts, in seconds (a week).
MAX_RETRY_WAIT_S = 7 * 86400

#: Days before expiry at which a token is warned about (cert-manager renews with a third of the
#: life left, ~120 days for a year; the best MDM products warn at 30).
DEFAULT_THRESHOLDS = (120, 60, 30, 14, 7, 3, 1)

#: Largest threshold accepted, in days (a token lives a year).
MAX_THRESHOLD_DAYS = 366

#: Seconds between two expiry scans, and the life of the scheduler's lease in seconds.
DEFAULT_SCAN_INTERVAL_S = 3600
DEFAULT_LEASE_TTL_S = 15

#: Apple's device enrollment service, and how often and how hard tokenwarden asks it.
DEFAULT_APPLE_URL = "https://mdmenrollment.apple.com"
DEFAULT_APPLE_CHECK_INTERVAL_S = 21_600
DEFAULT_APPLE_CONCURRENCY = 4
DEFAULT_APPLE_TIMEOUT_S = 10.0

#: The directories' services, and how hard tokenwarden asks them.
DEFAULT_ENTRA_LOGIN_URL = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
DEFAULT_GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
DEFAULT_GOOGLE_ADMIN_URL = "https://admin.googleapis.com"
DEFAULT_DIRECTORY_TIMEOUT_S = 10.0
DEFAULT_DIRECTORY_CONCURRENCY = 4

#: Where `tokenwarden serve` listens: loopback, behind the reverse proxy that does TLS.
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8080

#: Current tokens up to which `/metrics` has series per token (a Prometheus holds a few
#: million series; an estate larger than this is shown as counts by days left).
DEFAULT_METRICS_TOKEN_SERIES = 10_000


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    starttls: bool
    sender: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NotifySettings:
    webhook_timeout_s: float = DEFAULT_WEBHOOK_TIMEOUT_S
    retry_schedule_s: tuple[int, ...] = DEFAULT_SCHEDULE_S
    retry_jitter: float = DEFAULT_JITTER
    smtp: SmtpSettings | None = None
    #: Extra CAs the webhooks trust (TOKENWARDEN_CA_BUNDLE; every section that calls out
    #: carries it).
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class SchedulerSettings:
    thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS  # largest first, no duplicates
    scan_interval_s: int = DEFAULT_SCAN_INTERVAL_S
    lease_ttl_s: int = DEFAULT_LEASE_TTL_S


@dataclass(frozen=True)
class AppleSettings:
    url: str = DEFAULT_APPLE_URL
    #: 0: no scheduled checks (an air-gapped lab); `tokens check` still asks on demand.
    check_interval_s: int = DEFAULT_APPLE_CHECK_INTERVAL_S
    concurrency: int = DEFAULT_APPLE_CONCURRENCY
    timeout_s: float = DEFAULT_APPLE_TIMEOUT_S
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class DirectorySettings:
    entra_login_url: str = DEFAULT_ENTRA_LOGIN_URL
    graph_url: str = DEFAULT_GRAPH_URL
    google_token_url: str = DEFAULT_GOOGLE_TOKEN_URL
    google_admin_url: str = DEFAULT_GOOGLE_ADMIN_URL
    timeout_s: float = DEFAULT_DIRECTORY_TIMEOUT_S
    #: Requests at once to one directory.
    concurrency: int = DEFAULT_DIRECTORY_CONCURRENCY
    ca_bundle: Path | None = None


@dataclass(frozen=True)
class HttpSettings:
    host: str = DEFAULT_HTTP_HOST
    port: int = DEFAULT_HTTP_PORT
    trusted_proxies: tuple[str, ...] = ()
    #: The secret of `/calendar/renewals.ics` (None: the feed is not served).
    calendar_token: str | None = field(default=None, repr=False)

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)  # may hold a password
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    master_key: str | None = field(default=None, repr=False)
    #: Replicas to WAIT for after each acknowledged write (0: off), and for how long (ms).
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS
    log_level: str = "info"
    log_format: str = "auto"
    worker_processes: int = DEFAULT_WORKER_PROCESSES
    worker_threads: int = DEFAULT_WORKER_THREADS
    poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS
    heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S
    notify: NotifySettings = field(default_factory=NotifySettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    apple: AppleSettings = field(default_factory=AppleSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    directories: DirectorySettings = field(default_factory=DirectorySettings)
    #: Current tokens up to which `/metrics` has per-token series (0: never).
    metrics_token_series: int = DEFAULT_METRICS_TOKEN_SERIES
    #: The web pages under /ui/ (worker/config_ui.py).
    ui: UiSettings = field(default_factory=UiSettings)
    #: The variables these settings were read from (empty when built in code): the worker
    #: processes `tokenwarden worker` starts are given them, so each reads the same settings.
    environment: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls, variables: Mapping[str, str] | None = None) -> Settings:
        """Read every setting; a value that cannot be used raises ConfigError naming it."""
        variables = dict(os.environ if variables is None else variables)
        env = Environment(variables)
        ca_bundle = env.ca_bundle("TOKENWARDEN_CA_BUNDLE")
        http = _http(env)
        return cls(
            redis_url=env.redis_url("REDIS_URL", DEFAULT_REDIS_URL),
            data_dir=env.path("TOKENWARDEN_DATA_DIR", DEFAULT_DATA_DIR),
            master_key=env.master_keys("TOKENWARDEN_MASTER_KEY"),
            redis_wait_replicas=env.whole_number("TOKENWARDEN_REDIS_WAIT_REPLICAS", 0, 0, 16),
            redis_wait_timeout_ms=env.whole_number(
                "TOKENWARDEN_REDIS_WAIT_TIMEOUT_MS", DEFAULT_WAIT_TIMEOUT_MS, 1, 60_000, "ms"
            ),
            log_level=env.choice("TOKENWARDEN_LOG_LEVEL", LOG_LEVELS, "info"),
            log_format=env.choice("TOKENWARDEN_LOG_FORMAT", LOG_FORMATS, "auto"),
            worker_processes=env.whole_number(
                "TOKENWARDEN_WORKER_PROCESSES", DEFAULT_WORKER_PROCESSES, 1, 64
            ),
            worker_threads=env.whole_number(
                "TOKENWARDEN_WORKER_THREADS", DEFAULT_WORKER_THREADS, 1, 256
            ),
            poll_interval_ms=env.whole_number(
                "TOKENWARDEN_POLL_INTERVAL_MS", DEFAULT_POLL_INTERVAL_MS, 1, 60_000
            ),
            heartbeat_timeout_s=env.whole_number(
                "TOKENWARDEN_HEARTBEAT_TIMEOUT", DEFAULT_HEARTBEAT_TIMEOUT_S, 1, 3600
            ),
            notify=_notify(env, ca_bundle),
            scheduler=_scheduler(env),
            apple=_apple(env, ca_bundle),
            http=http,
            ui=read_ui(env, http.trusted_proxies),
            directories=_directories(env, ca_bundle),
            metrics_token_series=env.whole_number(
                "TOKENWARDEN_METRICS_TOKEN_SERIES", DEFAULT_METRICS_TOKEN_SERIES, 0, 10_000_000
            ),
            environment=variables,
        )

    @property
    def master_key_file(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def redis_url_display(self) -> str:
        return redact_url(self.redis_url)


def _notify(env: Environment, ca_bundle: Path | None) -> NotifySettings:
    return NotifySettings(
        webhook_timeout_s=env.number(
            "TOKENWARDEN_WEBHOOK_TIMEOUT", DEFAULT_WEBHOOK_TIMEOUT_S, 0.1, 300
        ),
        retry_schedule_s=env.whole_numbers(
            "TOKENWARDEN_WEBHOOK_RETRY_SCHEDULE",
            DEFAULT_SCHEDULE_S,
            1,
            MAX_RETRY_WAIT_S,
            unit="seconds",
            example="5,300,1800,7200",
        ),
        retry_jitter=env.number("TOKENWARDEN_WEBHOOK_RETRY_JITTER", DEFAULT_JITTER, 0, 0.5),
        smtp=_smtp(env),
        ca_bundle=ca_bundle,
    )


def _smtp(env: Environment) -> SmtpSettings | None:
    host = env.text("TOKENWARDEN_SMTP_HOST", "")
    if not host:
        return None
    starttls = env.boolean("TOKENWARDEN_SMTP_STARTTLS", True)
    return SmtpSettings(
        host=host,
        port=env.whole_number("TOKENWARDEN_SMTP_PORT", 587 if starttls else 25, 1, 65535),
        starttls=starttls,
        sender=env.text("TOKENWARDEN_SMTP_FROM", "") or f"tokenwarden@{socket.getfqdn()}",
        username=env.text("TOKENWARDEN_SMTP_USERNAME", "") or None,
        password=env.secret("TOKENWARDEN_SMTP_PASSWORD"),
    )


def _scheduler(env: Environment) -> SchedulerSettings:
    days = env.whole_numbers(
        "TOKENWARDEN_EXPIRY_THRESHOLDS",
        DEFAULT_THRESHOLDS,
        1,
        MAX_THRESHOLD_DAYS,
        unit="days",
        example=",".join(map(str, DEFAULT_THRESHOLDS)),
    )
    return SchedulerSettings(
        thresholds=tuple(sorted(set(days), reverse=True)),
        scan_interval_s=env.seconds(
            "TOKENWARDEN_SCAN_INTERVAL", DEFAULT_SCAN_INTERVAL_S, 1, 604_800
        ),
        lease_ttl_s=env.seconds("TOKENWARDEN_SCHEDULER_LEASE_TTL", DEFAULT_LEASE_TTL_S, 3, 600),
    )


def _apple(env: Environment, ca_bundle: Path | None) -> AppleSettings:
    return AppleSettings(
        url=env.http_url("TOKENWARDEN_APPLE_URL", DEFAULT_APPLE_URL),
        check_interval_s=env.whole_number(
            "TOKENWARDEN_APPLE_CHECK_INTERVAL",
            DEFAULT_APPLE_CHECK_INTERVAL_S,
            0,
            604_800,
            "seconds",
        ),
        concurrency=env.whole_number(
            "TOKENWARDEN_APPLE_CONCURRENCY", DEFAULT_APPLE_CONCURRENCY, 1, 256
        ),
        timeout_s=env.number("TOKENWARDEN_APPLE_TIMEOUT", DEFAULT_APPLE_TIMEOUT_S, 0.1, 300),
        ca_bundle=ca_bundle,
    )


def _directories(env: Environment, ca_bundle: Path | None) -> DirectorySettings:
    return DirectorySettings(
        entra_login_url=env.https_url("TOKENWARDEN_ENTRA_LOGIN_URL", DEFAULT_ENTRA_LOGIN_URL),
        graph_url=env.https_url("TOKENWARDEN_GRAPH_URL", DEFAULT_GRAPH_URL),
        google_token_url=env.https_url("TOKENWARDEN_GOOGLE_TOKEN_URL", DEFAULT_GOOGLE_TOKEN_URL),
        google_admin_url=env.https_url("TOKENWARDEN_GOOGLE_ADMIN_URL", DEFAULT_GOOGLE_ADMIN_URL),
        timeout_s=env.number(
            "TOKENWARDEN_DIRECTORY_TIMEOUT", DEFAULT_DIRECTORY_TIMEOUT_S, 0.1, 300
        ),
        concurrency=env.whole_number(
            "TOKENWARDEN_DIRECTORY_CONCURRENCY", DEFAULT_DIRECTORY_CONCURRENCY, 1, 64
        ),
        ca_bundle=ca_bundle,
    )


def _http(env: Environment) -> HttpSettings:
    host, port = env.host_port("TOKENWARDEN_HTTP_LISTEN", DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT)
    proxies = env.text("TOKENWARDEN_HTTP_TRUSTED_PROXIES", "")
    return HttpSettings(
        host=host,
        port=port,
        trusted_proxies=tuple(p.strip() for p in proxies.split(",") if p.strip()),
        calendar_token=read_calendar_token(env),
    )
