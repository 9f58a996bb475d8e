"""Settings: every variable is documented, bad values are named, defaults are embedded."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest import config

README = (Path(__file__).parents[2] / "README.md").read_text()


@pytest.mark.parametrize("name", [v[0] for v in config.VARIABLES])
def test_every_variable_is_in_the_readme_table(name):
    assert f"| `{name}` |" in README


def test_defaults_need_no_services():
    s = config.load({})
    assert s.database_url.startswith("sqlite:///") and s.port == 8000


def test_bad_values_are_all_named_at_once():
    with pytest.raises(config.SettingsError) as err:
        config.load({"PORT": "-1", "BILLING_TIMEZONE": "Mars/Base", "BATCH_SIZE": "x"})
    assert all(n in str(err.value) for n in ("PORT", "BILLING_TIMEZONE", "BATCH_SIZE"))


def test_heroku_style_database_url_is_accepted():
    s = config.load({"DATABASE_URL": "postgres://u@h/db", "PORT": "5000"})
    assert s.database_url == "postgresql+psycopg://u@h/db" and s.port == 5000


def test_config_is_the_only_reader_of_the_environment():
    root = Path(__file__).parents[2]
    readers = [
        str(path.relative_to(root))
        for package in ("ingest", "api", "workers", "schemas")
        for path in (root / package).rglob("*.py")
        if path != root / "ingest" / "config.py"
        and any(word in path.read_text() for word in ("os.environ", "os.getenv", "environ.get("))
    ]
    assert readers == []


def test_process_facts_come_from_config():
    assert config.redis_url_given({"REDIS_URL": "redis://h:1/0"}) and not config.redis_url_given({})
    assert config.port_text({}) == "8000" and config.port_text({"PORT": "5000"}) == "5000"
    assert config.prometheus_multiproc_dir({}) is None
    assert config.prometheus_multiproc_dir({"PROMETHEUS_MULTIPROC_DIR": "/tmp/p"}) == "/tmp/p"
    env = config.child_environment()
    env["INGEST_TEST_ONLY"] = "1"  # a copy: the process's own environment is untouched
    assert config.child_environment().get("INGEST_TEST_ONLY") is None
