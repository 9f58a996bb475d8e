"""One frozen Settings object, built from the environment once and validated at start.

This is the only module that reads ``os.environ``; everything else receives a Settings.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

T = TypeVar("T")

EMBEDDED_REDIS_PORT = 6380


class SettingsError(ValueError):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///ingest.db"
    redis_url: str = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
    port: int = 8000
    billing_timezone: str = "UTC"
    batch_size: int = 2000
    flush_interval: float = 0.1
    drain_budget: float = 10.0
    catalog_refresh: float = 2.0
    max_deliveries: int = 5
    enforce_ownership: bool = True
    max_body_bytes: int = 64 * 1024
    redis_prefix: str = "ingest"
    # minutes an entry stays in the Redis journal once committed (replay reads older ones
    # from the archive); "off" for JOURNAL_ARCHIVE_DIR keeps no archive
    journal_retention_minutes: float = 10.0
    journal_archive_dir: str = "var/archive"
    journal_archive_days: float = 35.0
    reconcile_interval: float = 30.0
    reconcile_after: float = 60.0
    web_concurrency: int = 3
    log_level: str = "INFO"
    secret_min_length: int = 0
    max_backlog: int = 1_000_000
    redis_memory_high_water: float = 0.8
    appendfsync: str = "everysec"
    operator_token: str = ""
    batch_max_reports: int = 1000
    max_usage_lines: int = 100
    secret_encryption_key: str = ""
    rate_limit: float = 0.0
    rate_burst: float = 0.0
    require_iat: bool = False
    max_token_age: float = 0.0
    token_replay_window: float = 0.0
    batch_max_bytes: int = 8 * 1024 * 1024
    log_format: str = ""  # empty: text when stderr is a terminal, else json
    head_timeout: float = 10.0
    body_timeout: float = 30.0
    limit_concurrency: int = 1000
    status_token_max_ttl: float = 3600.0
    drain_retry_budget: float = 45.0
    # Sentinel: when ``redis_sentinels`` is set, every Redis connection goes to the primary
    # the Sentinels name for ``redis_sentinel_master`` (host and port of redis_url unused)
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    redis_min_replicas_ack: int = 0
    redis_ack_timeout_ms: int = 100
    # the Waldur bridge (services/waldur_sync.py, services/forward.py); off while waldur_url is ""
    waldur_url: str = ""
    waldur_token: str = ""
    waldur_sync_interval: float = 300.0
    waldur_full_sync_interval: float = 3600.0
    waldur_forward_rate: float = 20.0
    waldur_forward_concurrency: int = 4
    waldur_timeout: float = 30.0
    waldur_offerings: tuple[str, ...] = ()
    waldur_secret_grace: float = 3600.0

    @property
    def bridge_enabled(self) -> bool:
        """True when WALDUR_URL is set: the catalog comes from Waldur and usage goes back."""
        return bool(self.waldur_url)

    @property
    def archive_enabled(self) -> bool:
        return self.journal_archive_dir.strip().lower() not in ("", "off", "none")

    @property
    def journal_retention_seconds(self) -> float:
        return self.journal_retention_minutes * 60

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.redis_sentinels)

    @property
    def redis_db(self) -> int:
        """The database number: the path of REDIS_URL (``/0``), for either URL form."""
        return redis_url_db(self.redis_url)

    @property
    def redis_password(self) -> str | None:
        """The password of REDIS_URL (``redis://:pw@host`` or ``redis+sentinel://:pw@...``)."""
        return redis_url_password(self.redis_url)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.billing_timezone)


# (environment variable, field, parser, description) -- the README table is generated from this.
def _bool(v: str) -> bool:
    low = v.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected a boolean, got {v!r}")


def _positive(cast: Callable[[str], T]) -> Callable[[str], T]:
    def parse(v: str) -> T:
        value = cast(v)
        if value <= 0:  # type: ignore[operator]
            raise ValueError(f"must be positive, got {v!r}")
        return value

    return parse


def _tz(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {v!r}") from exc
    return v


def _database_url(v: str) -> str:
    # Heroku-style platforms hand out postgres:// URLs; SQLAlchemy wants a driver name.
    for prefix in ("postgres://", "postgresql://"):
        if v.startswith(prefix):
            return "postgresql+psycopg://" + v[len(prefix) :]
    return v


SENTINEL_SCHEME = "redis+sentinel://"


def _redis_url(v: str) -> str:
    if v.startswith(SENTINEL_SCHEME):
        sentinel_url(v)  # raises on a malformed one
        return v
    if not v.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss://, unix:// or redis+sentinel://")
    return v


def _host_port(item: str) -> tuple[str, int]:
    host, sep, port = item.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {item.strip()!r}")
    return host.strip("[]"), int(port)


def _sentinels(v: str) -> tuple[tuple[str, int], ...]:
    found = tuple(_host_port(item) for item in v.split(",") if item.strip())
    if not found:
        raise ValueError("expected host:port[,host:port...]")
    return found


def _split_auth(rest: str) -> tuple[str | None, str]:
    """``[:password@]hosts...`` -> (password or None, the rest after the @)."""
    auth, at, tail = rest.rpartition("@")
    if not at:
        return None, rest
    password = auth.split(":", 1)[1] if ":" in auth else auth
    return (unquote(password) or None), tail


def sentinel_url(v: str) -> tuple[tuple[tuple[str, int], ...], str, int]:
    """``redis+sentinel://[:password@]host:port[,host:port...]/master[/db]`` -> (sentinels,
    master name, db)."""
    _password, rest = _split_auth(v[len(SENTINEL_SCHEME) :])
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/master[/db]")
    if len(parts) == 2 and not parts[1].isdigit():
        raise ValueError(f"database number must be an integer, got {parts[1]!r}")
    return _sentinels(hosts), parts[0], int(parts[1]) if len(parts) == 2 else 0


def redis_url_db(url: str) -> int:
    if url.startswith(SENTINEL_SCHEME):
        return sentinel_url(url)[2]
    path = urlparse(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def redis_url_password(url: str) -> str | None:
    if url.startswith(SENTINEL_SCHEME):
        return _split_auth(url[len(SENTINEL_SCHEME) :])[0]
    password = urlparse(url).password
    return unquote(password) if password else None


def _non_negative(v: str) -> int:
    value = int(v)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {v!r}")
    return value


VARIABLES: list[tuple[str, str, Callable[[str], Any], str]] = [
    (
        "DATABASE_URL",
        "database_url",
        _database_url,
        "SQLAlchemy URL of the usage database; `postgres://` is accepted",
    ),
    (
        "REDIS_URL",
        "redis_url",
        _redis_url,
        "Redis holding the journal, the work stream and the Celery broker; the default is the "
        "embedded Redis that `ingest run` starts. `redis+sentinel://h1:p1,h2:p2/master/db` "
        "is REDIS_SENTINELS + REDIS_SENTINEL_MASTER in one URL",
    ),
    (
        "REDIS_SENTINELS",
        "redis_sentinels",
        _sentinels,
        "`host:port,host:port` of Redis Sentinels: the journal, the Celery broker and every "
        "connection go to the primary they name (found again after a failover); REDIS_URL then "
        "gives only the database number and password",
    ),
    (
        "REDIS_SENTINEL_MASTER",
        "redis_sentinel_master",
        str,
        "the Sentinels' name of the primary (`sentinel monitor <name> ...`); needed with REDIS_SENTINELS",
    ),
    (
        "REDIS_MIN_REPLICAS_ACK",
        "redis_min_replicas_ack",
        _non_negative,
        "replicas that must acknowledge each accept (`WAIT`) before it is answered 201; "
        "else 503 + Retry-After. 0: no `WAIT`",
    ),
    (
        "REDIS_ACK_TIMEOUT_MS",
        "redis_ack_timeout_ms",
        _positive(int),
        "milliseconds an accept waits for REDIS_MIN_REPLICAS_ACK replicas",
    ),
    ("PORT", "port", _positive(int), "port the web process binds to"),
    (
        "BILLING_TIMEZONE",
        "billing_timezone",
        _tz,
        "time zone in which billing periods (calendar months) start",
    ),
    ("BATCH_SIZE", "batch_size", _positive(int), "reports committed per database transaction"),
    (
        "FLUSH_INTERVAL",
        "flush_interval",
        _positive(float),
        "seconds a worker waits for more reports before committing a partial batch",
    ),
    (
        "DRAIN_BUDGET",
        "drain_budget",
        _positive(float),
        "seconds one drain task keeps claiming batches before it yields the worker",
    ),
    (
        "CATALOG_REFRESH",
        "catalog_refresh",
        _positive(float),
        "seconds between checks of the catalog version by the web cache",
    ),
    (
        "MAX_DELIVERIES",
        "max_deliveries",
        _positive(int),
        "deliveries after which a report that keeps failing is quarantined",
    ),
    (
        "ENFORCE_OWNERSHIP",
        "enforce_ownership",
        _bool,
        "answer 403 when a provider reports for a resource it does not own; `false` = Waldur parity",
    ),
    ("MAX_BODY_BYTES", "max_body_bytes", _positive(int), "largest request body accepted (413)"),
    ("REDIS_PREFIX", "redis_prefix", str, "prefix of every Redis key this service owns"),
    (
        "JOURNAL_RETENTION_MINUTES",
        "journal_retention_minutes",
        _positive(float),
        "minutes a committed report stays in the Redis journal (replay reads older reports from "
        "the archive; with JOURNAL_ARCHIVE_DIR=off, only what this window holds can be replayed)",
    ),
    (
        "JOURNAL_ARCHIVE_DIR",
        "journal_archive_dir",
        str,
        "directory of the journal archive (segment files every worker appends each finalised "
        "report to, for `ingest replay`); a volume shared by the workers and the operator's "
        "command line; `off`: no archive",
    ),
    (
        "JOURNAL_ARCHIVE_DAYS",
        "journal_archive_days",
        _positive(float),
        "days the journal archive keeps a report before its segment is pruned",
    ),
    (
        "RECONCILE_INTERVAL",
        "reconcile_interval",
        _positive(float),
        "seconds between reconciler runs (beat process)",
    ),
    (
        "RECONCILE_AFTER",
        "reconcile_after",
        _positive(float),
        "seconds a claimed report may stay uncommitted before the reconciler re-drives it",
    ),
    (
        "WEB_CONCURRENCY",
        "web_concurrency",
        _positive(int),
        "gunicorn worker processes (each a uvicorn event loop)",
    ),
    ("LOG_LEVEL", "log_level", str, "DEBUG, INFO, WARNING or ERROR"),
    (
        "SECRET_MIN_LENGTH",
        "secret_min_length",
        int,
        "refuse to load provider secrets shorter than this (0: accept Waldur's 16-character secrets)",
    ),
]


def _fsync(v: str) -> str:
    if v not in ("always", "everysec", "no"):
        raise ValueError("must be always, everysec or no")
    return v


def _fraction(v: str) -> float:
    value = float(v)
    if not 0 < value <= 1:
        raise ValueError(f"must be in (0, 1], got {v!r}")
    return value


VARIABLES += [
    (
        "MAX_BACKLOG",
        "max_backlog",
        _positive(int),
        "reports accepted but not committed above which set_usage answers 503 + Retry-After",
    ),
    (
        "REDIS_MEMORY_HIGH_WATER",
        "redis_memory_high_water",
        _fraction,
        "fraction of Redis maxmemory above which set_usage answers 503 + Retry-After",
    ),
    (
        "BATCH_MAX_REPORTS",
        "batch_max_reports",
        _positive(int),
        "most reports in one set_usages request (more: 413)",
    ),
    (
        "MAX_USAGE_LINES",
        "max_usage_lines",
        _positive(int),
        "most usage lines in one report (more: 400 on `usages`)",
    ),
    (
        "BATCH_MAX_BYTES",
        "batch_max_bytes",
        _positive(int),
        "largest set_usages body after gzip decompression (more: 413)",
    ),
    (
        "SECRET_ENCRYPTION_KEY",
        "secret_encryption_key",
        str,
        "Fernet key (`python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())'`) sealing provider secrets at rest; empty: plain",
    ),
    (
        "RATE_LIMIT",
        "rate_limit",
        float,
        "default reports per second per provider (token bucket in Redis, shared by all web "
        "nodes); 0: unlimited. A provider's `rate_limit` in the catalog overrides it",
    ),
    ("RATE_BURST", "rate_burst", float, "bucket size; 0: twice the rate"),
    ("REQUIRE_IAT", "require_iat", _bool, "reject tokens without an `iat` claim (off: Waldur parity)"),
    (
        "MAX_TOKEN_AGE",
        "max_token_age",
        float,
        "reject tokens whose `iat` is older than this many seconds; 0: off",
    ),
    (
        "TOKEN_REPLAY_WINDOW",
        "token_replay_window",
        float,
        "seconds during which an already accepted token (by `jti`, else by digest) is refused; 0: off",
    ),
    (
        "OPERATOR_TOKEN",
        "operator_token",
        str,
        "token operators send as `Authorization: Token ...` to read any report's status (empty: off)",
    ),
    (
        "APPENDFSYNC",
        "appendfsync",
        _fsync,
        "fsync policy of the embedded Redis's append-only file (always / everysec / no)",
    ),
    (
        "HEAD_TIMEOUT",
        "head_timeout",
        _positive(float),
        "seconds a client has to send a request's head (from connecting, or from its first byte)",
    ),
    (
        "BODY_TIMEOUT",
        "body_timeout",
        _positive(float),
        "seconds a client has to send a request's body once its head is in; then the connection closes",
    ),
    (
        "LIMIT_CONCURRENCY",
        "limit_concurrency",
        _positive(int),
        "open connections (and requests in progress) per web worker past which a request gets "
        "503 + `Retry-After`; keep WEB_CONCURRENCY x this below what the proxy in front may open",
    ),
    (
        "STATUS_TOKEN_MAX_TTL",
        "status_token_max_ttl",
        _positive(float),
        "longest lifetime (`exp` - `iat`, and `exp` - now) of a report-status token a provider signs",
    ),
    (
        "DRAIN_RETRY_BUDGET",
        "drain_retry_budget",
        _positive(float),
        "seconds a worker keeps retrying a claimed batch while the database is unavailable "
        "(short back-off) before leaving it to the reconciler; capped below RECONCILE_AFTER",
    ),
]


def _log_format(v: str) -> str:
    low = v.strip().lower()
    if low not in ("json", "text"):
        raise ValueError("must be json or text")
    return low


VARIABLES += [
    (
        "LOG_FORMAT",
        "log_format",
        _log_format,
        "`json` (one object per line) or `text` (one human line); unset: text when stderr is a "
        "terminal, else json",
    ),
]


def _http_url(v: str) -> str:
    if not v.startswith(("http://", "https://")) or not urlparse(v).netloc:
        raise ValueError("must be an http:// or https:// URL")
    return v.rstrip("/") + "/"


def _uuid_list(v: str) -> tuple[str, ...]:
    found = []
    for item in (part.strip() for part in v.split(",")):
        if not item:
            continue
        try:
            found.append(uuid.UUID(item).hex)
        except ValueError:
            raise ValueError(f"{item!r} is not a UUID") from None
    return tuple(found)


VARIABLES += [
    (
        "WALDUR_URL",
        "waldur_url",
        _http_url,
        "base URL of the Waldur in front of which this service runs (`https://waldur.example.com/`): "
        "the catalog is synced from it and committed usage is forwarded to it; empty: standalone",
    ),
    (
        "WALDUR_TOKEN",
        "waldur_token",
        str,
        "Waldur API token (`Authorization: Token ...`) of a staff user, or of a user owning every "
        "provider's customer (README, 'In front of Waldur'); needed with WALDUR_URL",
    ),
    (
        "WALDUR_SYNC_INTERVAL",
        "waldur_sync_interval",
        _positive(float),
        "seconds between incremental catalog syncs from Waldur (beat process)",
    ),
    (
        "WALDUR_FULL_SYNC_INTERVAL",
        "waldur_full_sync_interval",
        _positive(float),
        "seconds between full catalog syncs, which also remove what Waldur no longer has",
    ),
    (
        "WALDUR_FORWARD_RATE",
        "waldur_forward_rate",
        _positive(float),
        "most set_usage calls per second to Waldur, shared by every forwarder process "
        "(Waldur itself takes about 54 a second on 2 cores)",
    ),
    (
        "WALDUR_FORWARD_CONCURRENCY",
        "waldur_forward_concurrency",
        _positive(int),
        "set_usage calls one forwarder process keeps in flight (one per resource at most)",
    ),
    (
        "WALDUR_TIMEOUT",
        "waldur_timeout",
        _positive(float),
        "seconds before a call to Waldur is abandoned (and retried)",
    ),
    (
        "WALDUR_OFFERINGS",
        "waldur_offerings",
        _uuid_list,
        "comma-separated offering UUIDs to sync and forward; empty: every offering the token sees",
    ),
    (
        "WALDUR_SECRET_GRACE",
        "waldur_secret_grace",
        _positive(float),
        "seconds a provider secret that changed in Waldur keeps verifying after a sync sees the change",
    ),
]


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment; raise SettingsError naming every bad variable."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, field, parse, _ in VARIABLES:
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        try:
            values[field] = parse(raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    hours = env.get("JOURNAL_RETENTION_HOURS")
    if hours and "journal_retention_minutes" not in values:
        # the variable before the archive: still honoured, in minutes
        try:
            values["journal_retention_minutes"] = _positive(float)(hours) * 60
        except ValueError as exc:
            problems.append(f"JOURNAL_RETENTION_HOURS: {exc}")
    if problems:
        raise SettingsError("invalid configuration: " + "; ".join(problems))
    url = values.get("redis_url", "")
    if url.startswith(SENTINEL_SCHEME):
        hosts, master, _db = sentinel_url(url)
        values.setdefault("redis_sentinels", hosts)
        values.setdefault("redis_sentinel_master", master)
    if values.get("redis_sentinels") and not values.get("redis_sentinel_master"):
        raise SettingsError("invalid configuration: REDIS_SENTINEL_MASTER: needed with REDIS_SENTINELS")
    if values.get("waldur_url") and not values.get("waldur_token"):
        raise SettingsError("invalid configuration: WALDUR_TOKEN: needed with WALDUR_URL")
    settings = Settings(**values)
    if settings.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(f"invalid configuration: LOG_LEVEL: unknown level {settings.log_level!r}")
    return settings


# Process-level facts that are not Settings: they say how this process was started (by
# ``ingest run``, by a platform) rather than how the service behaves.


def redis_url_given(environ: Mapping[str, str] | None = None) -> bool:
    """True when REDIS_URL or REDIS_SENTINELS is set: ``ingest run`` then starts no embedded
    Redis."""
    env = os.environ if environ is None else environ
    return bool(env.get("REDIS_URL") or env.get("REDIS_SENTINELS"))


def database_url_given(environ: Mapping[str, str] | None = None) -> bool:
    """True when DATABASE_URL is set (``ingest run --waldur-demo`` then uses it, else its own
    SQLite file)."""
    env = os.environ if environ is None else environ
    return bool(env.get("DATABASE_URL"))


def port_text(environ: Mapping[str, str] | None = None) -> str:
    """PORT as given (unparsed, for a command-line default), else 8000."""
    env = os.environ if environ is None else environ
    return env.get("PORT", "8000")


def prometheus_multiproc_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """Where processes on this host share metric samples (PROMETHEUS_MULTIPROC_DIR; the
    prometheus client reads the same variable), or None in single-process mode."""
    env = os.environ if environ is None else environ
    return env.get("PROMETHEUS_MULTIPROC_DIR") or None


def child_environment() -> dict[str, str]:
    """A copy of this process's environment, for a child process to start from."""
    return dict(os.environ)
