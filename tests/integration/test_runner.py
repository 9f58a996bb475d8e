"""``ingest run``'s preparation: the demo catalog is stored the way the service stores any
catalog, so SECRET_ENCRYPTION_KEY seals its secrets too."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import sqlalchemy as sa
from cryptography.fernet import Fernet

from ingest import bootstrap, config
from ingest.dev import runner


def _stored_secrets(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.text("SELECT api_secret_code FROM service_providers"))]
    finally:
        engine.dispose()


def test_demo_secrets_are_sealed_when_a_key_is_set(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    settings = config.load({"DATABASE_URL": url, "SECRET_ENCRYPTION_KEY": Fernet.generate_key().decode()})
    runner.prepare_database(settings, demo=True)
    stored = _stored_secrets(url)
    assert stored and all(s.startswith("fernet:") for s in stored), stored
    assert not any("demo-secret" in s for s in stored)
    # and the service reads them back with the same key
    rt = bootstrap.Runtime(settings)
    try:
        secrets = {p.secret for p in rt.catalog_source.snapshot().providers.values()}
    finally:
        rt.engine.dispose()
    assert "demo-secret-0001" in secrets


def test_demo_secrets_stay_plain_without_a_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ingest.db'}"
    settings = dataclasses.replace(config.load({}), database_url=url)
    runner.prepare_database(settings, demo=True)
    assert "demo-secret-0001" in _stored_secrets(url)
