"""REDIS_SENTINELS / REDIS_SENTINEL_MASTER (or one redis+sentinel:// URL), the replica
acknowledgement settings, and what the connection builders make of them."""

from __future__ import annotations

import pytest

from ingest import config
from ingest.adapters.redis import connections
from ingest.config import SettingsError


def test_defaults_send_no_wait_and_use_redis_url():
    s = config.load({})
    assert not s.uses_sentinel
    assert s.redis_min_replicas_ack == 0 and s.redis_ack_timeout_ms == 100
    assert connections.broker_url(s) == s.redis_url
    assert connections.broker_transport_options(s) == {}


def test_sentinel_list_and_master_name():
    s = config.load(
        {
            "REDIS_SENTINELS": "10.0.0.1:26379, sentinel-b:26380",
            "REDIS_SENTINEL_MASTER": "mymaster",
            "REDIS_URL": "redis://:s3cret@ignored:1/3",
            "REDIS_MIN_REPLICAS_ACK": "1",
            "REDIS_ACK_TIMEOUT_MS": "250",
        }
    )
    assert s.redis_sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26380))
    assert s.redis_sentinel_master == "mymaster"
    assert (s.redis_db, s.redis_password) == (3, "s3cret")
    assert (s.redis_min_replicas_ack, s.redis_ack_timeout_ms) == (1, 250)
    assert (
        connections.broker_url(s)
        == "sentinel://:s3cret@10.0.0.1:26379/3;sentinel://:s3cret@sentinel-b:26380/3"
    )
    assert connections.broker_transport_options(s)["master_name"] == "mymaster"


def test_the_url_form_is_the_same_settings():
    s = config.load({"REDIS_URL": "redis+sentinel://h1:26379,h2:26380/mymaster/2"})
    assert s.redis_sentinels == (("h1", 26379), ("h2", 26380))
    assert (s.redis_sentinel_master, s.redis_db, s.redis_password) == ("mymaster", 2, None)
    assert connections.broker_url(s) == "sentinel://h1:26379/2;sentinel://h2:26380/2"
    pw = config.load({"REDIS_URL": "redis+sentinel://:p%40ss@h1:26379/m"})
    assert (pw.redis_db, pw.redis_password, pw.redis_sentinel_master) == (0, "p@ss", "m")


def test_explicit_variables_win_over_the_url():
    s = config.load(
        {
            "REDIS_URL": "redis+sentinel://h1:26379/from-url/1",
            "REDIS_SENTINELS": "h9:1",
            "REDIS_SENTINEL_MASTER": "explicit",
        }
    )
    assert s.redis_sentinels == (("h9", 1),) and s.redis_sentinel_master == "explicit" and s.redis_db == 1


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_SENTINELS": "h1:26379"}, "REDIS_SENTINEL_MASTER"),
        ({"REDIS_SENTINELS": "h1", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
        ({"REDIS_SENTINELS": "h1:0", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_SENTINELS"),
        ({"REDIS_URL": "redis+sentinel://h1:26379"}, "REDIS_URL"),
        ({"REDIS_URL": "redis+sentinel://h1:26379/m/x"}, "REDIS_URL"),
        ({"REDIS_URL": "http://h1"}, "REDIS_URL"),
        ({"REDIS_MIN_REPLICAS_ACK": "-1"}, "REDIS_MIN_REPLICAS_ACK"),
        ({"REDIS_ACK_TIMEOUT_MS": "0"}, "REDIS_ACK_TIMEOUT_MS"),
    ],
)
def test_bad_values_name_the_variable(env, named):
    with pytest.raises(SettingsError, match=named):
        config.load(env)


def test_sentinels_alone_mean_no_embedded_redis():
    assert config.redis_url_given({"REDIS_SENTINELS": "h:1"})
    assert not config.redis_url_given({})
