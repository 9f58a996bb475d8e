"""gunicorn settings from the environment (twelve-factor): binds 0.0.0.0:$PORT."""

from ingest.config import load as _load_settings

_settings = _load_settings()

bind = f"0.0.0.0:{_settings.port}"
workers = _settings.web_concurrency
# uvicorn in each worker (api/server.py): keep-alive, and concurrent requests share
# one Redis write. sync closed every connection; gthread can let one process take them all.
worker_class = "api.server.Worker"
preload_app = False  # connections are built after the fork, in each worker
timeout = 30  # a worker whose event loop stalls this long is restarted
graceful_timeout = 25  # inside the 30 s grace period of Procfile platforms
keepalive = 5  # seconds an idle connection stays open
# request-size limits, slow-client timeouts (HEAD_TIMEOUT, BODY_TIMEOUT) and the connection
# limit (LIMIT_CONCURRENCY, per worker; uvicorn ignores gunicorn's limit_request_* and
# worker_connections): api/server.py
accesslog = None
logger_class = "api.gunicorn_logs.GunicornLogger"  # gunicorn's own lines in our format
control_socket_disable = True  # gunicorn 25+: one shared ~/.gunicorn socket would clash


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from ingest import bootstrap

    bootstrap.metrics_process_exited(worker.pid)


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    from ingest import bootstrap

    bootstrap.flush_metrics()  # counts still held in the process


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Pay the one-off costs before the first request: Celery's import, the catalog load."""
    from ingest import bootstrap

    rt = bootstrap.runtime()
    try:
        _ = rt.producer
        rt.catalog.get()
        rt.queue.ensure_group()
    except Exception as exc:  # the first request will try again and answer 503 if it must
        worker.log.warning("warm-up incomplete: %s", exc)
    bootstrap.tune_gc()
    rt.intake.check_in_background()  # catalog version and back-pressure, off the event loop
