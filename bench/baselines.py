"""The three baselines of issue 5, measured in the same run as the product.

(a) ``bare_app``: Falcon that reads the body, verifies the JWT with PyJWT and does one Redis
    LPUSH -- the ceiling for intake. An ASGI app served as ours is (gunicorn with the
    product's config file: uvicorn workers), awaiting its LPUSH on redis-py's asyncio client.
    ``bare_sync_app`` is the same as a WSGI app on gunicorn's sync worker, the server the
    product used until session 3: reported for reference, not as a ceiling.
(b) ``consume``: a raw batch consumer of the journal stream: XREADGROUP 500, decode, COPY
    into a temporary staging table, INSERT .. ON CONFLICT merge into component_usages, XACK;
    no validation, no per-report records -- the ceiling for drain.
(c) ``waldur_app``: a synchronous Waldur-style handler: in one transaction per request, look
    the provider's secret up in SQL, verify the JWT, validate resource, ownership, state, plan,
    components and plan period with SQL queries, then upsert the usage item by item
    (SELECT .. FOR UPDATE, then UPDATE or INSERT), as Waldur's set_usage does.

The apps read DATABASE_URL and REDIS_URL and build their connections lazily, after
gunicorn forked.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import uuid
from typing import Any

PREFIX = "/api/marketplace-public-api"
BARE_LIST = "bench:bare"
WALDUR_TABLE = "bench_waldur_usages"
VALID_STATES = {"OK", "UPDATING", "TERMINATING"}
REPORTABLE = {"usage", "limit", "one"}

WALDUR_DDL = f"""
CREATE TABLE IF NOT EXISTS {WALDUR_TABLE} (
    id BIGSERIAL PRIMARY KEY,
    resource_uuid UUID NOT NULL,
    component_type VARCHAR(255) NOT NULL,
    billing_period DATE NOT NULL,
    plan_period_uuid UUID,
    amount NUMERIC(20, 2) NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    date TIMESTAMPTZ NOT NULL,
    modified TIMESTAMPTZ NOT NULL,
    UNIQUE (resource_uuid, component_type, billing_period)
)
"""


def _json(resp: Any, status: int, body: Any) -> None:
    import falcon
    import orjson

    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(body)


class _Health:
    def on_get(self, req: Any, resp: Any) -> None:
        _json(resp, 200, {"status": "ok"})


# -- (a) bare Falcon + PyJWT + one Redis write -------------------------------------------------


def _secrets() -> dict[str, str]:
    import sqlalchemy as sa

    engine = sa.create_engine(os.environ["DATABASE_URL"])
    with engine.connect() as conn:  # secrets once per process: the ceiling, not the product
        found = {
            str(uuid.UUID(str(row[0]))): row[1]
            for row in conn.execute(sa.text("SELECT customer_uuid, api_secret_code FROM service_providers"))
        }
    engine.dispose()
    return found


def _verify(raw: bytes, secrets: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
    """None when the token verifies, else the answer."""
    import jwt
    import orjson

    body = orjson.loads(raw)
    secret = secrets.get(body.get("customer"))
    if not secret:
        return 400, {"customer": ["does not exist"]}
    try:
        jwt.decode(body["data"], secret, algorithms=["HS256"])
    except jwt.PyJWTError:
        return 400, {"non_field_errors": ["Signature verification failed."]}
    return None


class _BareSetUsage:
    def __init__(self) -> None:
        import redis.asyncio

        self.redis = redis.asyncio.Redis.from_url(os.environ["REDIS_URL"])
        self.secrets = _secrets()

    async def on_post(self, req: Any, resp: Any) -> None:
        raw = await req.stream.read()
        refused = _verify(raw, self.secrets)
        if refused:
            _json(resp, *refused)
            return
        n = await self.redis.lpush(BARE_LIST, raw)
        _json(resp, 201, {"sequence": n, "status": "queued"})


class _AsyncHealth:
    async def on_get(self, req: Any, resp: Any) -> None:
        _json(resp, 200, {"status": "ok"})


def _bare() -> Any:
    import falcon.asgi

    app = falcon.asgi.App()
    app.req_options.strip_url_path_trailing_slash = False
    app.add_route(f"{PREFIX}/set_usage/", _BareSetUsage())
    app.add_route("/healthz", _AsyncHealth())
    return app


class _BareSyncSetUsage:
    def __init__(self) -> None:
        import redis

        self.redis = redis.Redis.from_url(os.environ["REDIS_URL"])
        self.secrets = _secrets()

    def on_post(self, req: Any, resp: Any) -> None:
        raw = req.bounded_stream.read()
        refused = _verify(raw, self.secrets)
        if refused:
            _json(resp, *refused)
            return
        n = self.redis.lpush(BARE_LIST, raw)
        _json(resp, 201, {"sequence": n, "status": "queued"})


def _bare_sync() -> Any:
    import falcon

    app = falcon.App()
    app.req_options.strip_url_path_trailing_slash = False
    app.add_route(f"{PREFIX}/set_usage/", _BareSyncSetUsage())
    app.add_route("/healthz", _Health())
    return app


# -- (c) synchronous, Waldur-style ---------------------------------------------------------------


class _WaldurSetUsage:
    def __init__(self) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.engine = sa.create_engine(os.environ["DATABASE_URL"], pool_size=2)
        self.q_secret = sa.text("SELECT api_secret_code FROM service_providers WHERE customer_uuid = :c")
        self.q_resource = sa.text(
            "SELECT r.state, r.plan_uuid, r.offering_uuid, o.customer_uuid FROM resources r "
            "JOIN offerings o ON o.uuid = r.offering_uuid WHERE r.uuid = :r"
        )
        self.q_components = sa.text(
            "SELECT type, billing_type FROM offering_components WHERE offering_uuid = :o"
        )
        self.q_period = sa.text(
            "SELECT uuid FROM plan_periods WHERE resource_uuid = :r AND (start IS NULL OR "
            'start <= :now) AND ("end" IS NULL OR "end" > :now) ORDER BY start LIMIT 1'
        )
        self.q_lock = sa.text(
            f"SELECT id FROM {WALDUR_TABLE} WHERE resource_uuid = :r AND component_type = :t "
            "AND billing_period = :p FOR UPDATE"
        )
        self.q_update = sa.text(
            f"UPDATE {WALDUR_TABLE} SET amount = :a, description = :d, date = :now, "
            "plan_period_uuid = :pp, modified = :now WHERE id = :id"
        )
        self.q_insert = sa.text(
            f"INSERT INTO {WALDUR_TABLE} (resource_uuid, component_type, billing_period, "
            "plan_period_uuid, amount, description, date, modified) "
            "VALUES (:r, :t, :p, :pp, :a, :d, :now, :now)"
        )

    def on_post(self, req: Any, resp: Any) -> None:
        from decimal import Decimal

        import jwt
        import orjson

        body = orjson.loads(req.bounded_stream.read())
        try:
            customer = uuid.UUID(body["customer"])
        except (KeyError, ValueError, TypeError):
            _json(resp, 400, {"customer": ["invalid"]})
            return
        with self.engine.begin() as conn:  # ATOMIC_REQUESTS: one transaction per request
            secret = conn.execute(self.q_secret, {"c": customer}).scalar()
            if not secret:
                _json(resp, 400, {"customer": ["does not exist"]})
                return
            try:
                claims = jwt.decode(body["data"], secret, algorithms=["HS256"])
            except jwt.PyJWTError:
                _json(resp, 400, {"non_field_errors": ["Signature verification failed."]})
                return
            resource = uuid.UUID(claims["resource"])
            row = conn.execute(self.q_resource, {"r": resource}).first()
            if row is None:
                _json(resp, 400, {"resource": ["does not exist"]})
                return
            state, plan, offering, owner = row
            if owner != customer:
                _json(resp, 403, {"detail": "forbidden"})
                return
            if state.upper() not in VALID_STATES or plan is None:
                _json(resp, 400, {"resource": ["Resource is not in valid state."]})
                return
            components: dict[str, str] = {
                str(t): str(b) for t, b in conn.execute(self.q_components, {"o": offering})
            }
            usages = claims["usages"]
            if any(components.get(u["type"]) not in REPORTABLE for u in usages):
                _json(resp, 400, {"non_field_errors": ["These components are invalid."]})
                return
            now = dt.datetime.now(dt.UTC)
            period = dt.date(now.year, now.month, 1)
            plan_period = conn.execute(self.q_period, {"r": resource, "now": now}).scalar()
            for u in usages:  # item by item
                params = {
                    "r": resource,
                    "t": u["type"],
                    "p": period,
                    "pp": plan_period,
                    "a": Decimal(u["amount"]),
                    "d": u.get("description", ""),
                    "now": now,
                }
                found = conn.execute(self.q_lock, params).scalar()
                if found is None:
                    conn.execute(self.q_insert, params)
                else:
                    conn.execute(self.q_update, {**params, "id": found})
        _json(resp, 201, {"status": "ok", "billing_period": period.isoformat()})


def _waldur() -> Any:
    import falcon

    app = falcon.App()
    app.req_options.strip_url_path_trailing_slash = False
    app.add_route(f"{PREFIX}/set_usage/", _WaldurSetUsage())
    app.add_route("/healthz", _Health())
    return app


_apps: dict[str, Any] = {}


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    app = _apps.get("bare") or _apps.setdefault("bare", _bare())
    await app(scope, receive, send)


def bare_sync_app(environ: dict[str, Any], start_response: Any) -> Any:
    app = _apps.get("bare_sync") or _apps.setdefault("bare_sync", _bare_sync())
    return app(environ, start_response)


def waldur_app(environ: dict[str, Any], start_response: Any) -> Any:
    app = _apps.get("waldur") or _apps.setdefault("waldur", _waldur())
    return app(environ, start_response)


# -- (b) raw batch consumer ------------------------------------------------------------------------

STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS bench_stage (
    resource_uuid UUID, component_type TEXT, billing_period DATE, plan_period_uuid UUID,
    amount NUMERIC(20, 2), description TEXT, recurring BOOLEAN, missing_usage_policy TEXT,
    date TIMESTAMPTZ, report_id TEXT, report_seq BIGINT
) ON COMMIT DELETE ROWS
"""
STAGE_COLS = (
    "resource_uuid, component_type, billing_period, plan_period_uuid, amount, "
    "description, recurring, missing_usage_policy, date, report_id, report_seq"
)
MERGE = f"""
INSERT INTO component_usages ({STAGE_COLS}, updated_at)
SELECT DISTINCT ON (resource_uuid, component_type, billing_period) {STAGE_COLS}, now()
FROM bench_stage
ORDER BY resource_uuid, component_type, billing_period, report_seq DESC
ON CONFLICT (resource_uuid, component_type, billing_period) DO UPDATE SET
    plan_period_uuid = excluded.plan_period_uuid, amount = excluded.amount,
    description = excluded.description, recurring = excluded.recurring,
    missing_usage_policy = excluded.missing_usage_policy, date = excluded.date,
    report_id = excluded.report_id, report_seq = excluded.report_seq,
    updated_at = excluded.updated_at
WHERE component_usages.report_seq < excluded.report_seq
"""


def consume(
    redis_url: str,
    libpq_url: str,
    stream: str,
    group: str,
    name: str,
    batch: int,
    go_key: str,
    wait: float = 120.0,
) -> dict[str, float]:
    """Drain ``group`` on ``stream`` until a read comes back empty; return counts."""
    import psycopg
    import redis

    from schemas import queue as wire

    r: Any = redis.Redis.from_url(redis_url)
    conn = psycopg.connect(libpq_url)
    conn.execute(STAGE_DDL)
    conn.commit()
    r.set(f"{go_key}:ready:{name}", "1", ex=600)
    deadline = time.monotonic() + wait
    while not r.exists(go_key):
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.005)
    started = time.perf_counter()
    reports = 0
    while not r.exists(f"{go_key}:stop"):
        answer = r.xreadgroup(group, name, {stream: ">"}, count=batch, block=200)
        if not answer or not answer[0][1]:
            break
        entries = answer[0][1]
        rows = []
        for _eid, fields in entries:
            rep = wire.decode(fields[b"r"])
            seq = int(fields[b"s"])
            for u in rep.usages:
                rows.append(
                    (
                        rep.resource,
                        u.type,
                        rep.billing_period,
                        rep.plan_period,
                        u.amount,
                        u.description,
                        u.recurring,
                        u.missing_usage_policy,
                        rep.date,
                        rep.id,
                        seq,
                    )
                )
        for attempt in range(5):
            try:
                with conn.transaction(), conn.cursor() as cur:
                    with cur.copy(f"COPY bench_stage ({STAGE_COLS}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                    cur.execute(MERGE)
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == 4:
                    raise
        r.xack(stream, group, *[eid for eid, _ in entries])
        reports += len(entries)
    elapsed = time.perf_counter() - started
    conn.close()
    return {"reports": reports, "seconds": elapsed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baselines")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("consume", help="baseline (b): raw batch consumer")
    c.add_argument("--redis-url", required=True)
    c.add_argument("--database-url", required=True, help="libpq URL")
    c.add_argument("--stream", required=True)
    c.add_argument("--group", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--batch", type=int, default=500)
    c.add_argument("--go-key", required=True)
    args = p.parse_args(argv)
    out = consume(
        args.redis_url, args.database_url, args.stream, args.group, args.name, args.batch, args.go_key
    )
    print(f"consumed {out['reports']} in {out['seconds']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
