"""Broker URLs for one server, a Redis Cluster and Sentinel: parsing, lists, config errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import load_test_config
from redis.crc import key_slot

from tailrace.broker import PartitionCountChanged, ensure_partition_count
from tailrace.brokerurl import BrokerAddress, join_broker_urls, parse_broker_url
from tailrace.errors import BrokerUnavailable, ConfigError
from tailrace.keys import Keys
from tailrace.serviceconfig import ServiceConfig
from tailrace.topology import build_client, redact_url


def test_plain_urls_are_left_to_redis_py() -> None:
    for url in ("redis://127.0.0.1:6379/0", "rediss://u:p@h:1/2", "unix:///tmp/r.sock"):
        assert parse_broker_url(url) == BrokerAddress("single", url)


def test_cluster_url_lists_every_seed_with_credentials_and_tls() -> None:
    addr = parse_broker_url("rediss+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2:7001,"
                            "[::1]:7002")
    assert addr.kind == "cluster" and addr.tls
    assert addr.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert (addr.username, addr.password) == ("app", "s@cret")


def test_sentinel_url_names_the_service_and_database() -> None:
    addr = parse_broker_url("redis+sentinel://:pw@s1:26379,s2:26379/logs/3"
                            "?sentinel_password=spw")
    assert addr.kind == "sentinel" and not addr.tls
    assert addr.hosts == (("s1", 26379), ("s2", 26379))
    assert (addr.service, addr.db, addr.password) == ("logs", 3, "pw")
    assert addr.options == {"sentinel_password": "spw"}


@pytest.mark.parametrize("url, says", [
    ("http://h:1", "unknown broker URL scheme 'http'"),
    ("redis+cluster://h", "expected host:port, got 'h'"),
    ("redis+cluster://", "no host:port given"),
    ("redis+cluster://h:1/2", "Redis Cluster has only database 0"),
    ("redis+sentinel://h:1", "names its master service"),
    ("redis+sentinel://h:1/svc/x", "expected /SERVICE or /SERVICE/DB"),
])
def test_malformed_urls_say_what_is_expected(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_broker_url(url)


def test_errors_never_show_the_password() -> None:
    with pytest.raises(ValueError) as err:
        parse_broker_url("redis+cluster://u:hunter2@h")
    assert "hunter2" not in str(err.value) and "***" in str(err.value)
    assert redact_url("redis+sentinel://u:hunter2@h:1/s") == "redis+sentinel://u:***@h:1/s"
    assert redact_url("redis+sentinel://h:1/s?sentinel_password=hunter2&x=1") == \
        "redis+sentinel://h:1/s?sentinel_password=***&x=1"


def test_a_list_of_seeds_becomes_one_url() -> None:
    assert join_broker_urls(["redis+cluster://u:p@a:1", "redis+cluster://u:p@b:2"]) == \
        "redis+cluster://u:p@a:1,b:2"
    assert join_broker_urls(["redis+sentinel://a:1/svc/2", "redis+sentinel://b:2/svc/2"]) == \
        "redis+sentinel://a:1,b:2/svc/2"
    with pytest.raises(ValueError, match="differs from"):
        join_broker_urls(["redis+cluster://a:1", "redis+sentinel://b:2/svc"])
    with pytest.raises(ValueError, match="single server takes one"):
        join_broker_urls(["redis://a:1", "redis://b:2"])


def test_config_accepts_a_list_of_cluster_seeds() -> None:
    svc = ServiceConfig.model_validate(
        {"broker": ["redis+cluster://10.0.0.1:7000", "redis+cluster://10.0.0.2:7000"]})
    assert svc.broker == "redis+cluster://10.0.0.1:7000,10.0.0.2:7000"


def test_config_error_names_file_line_and_key_of_a_bad_broker_url() -> None:
    text = "service:\n  partitions: 4\n  broker: redis+sentinel://s1:26379\n"
    with pytest.raises(ConfigError) as err:
        load_test_config(text, "pipeline.yaml")
    msg = str(err.value)
    assert msg.startswith("pipeline.yaml:3:11: service.broker:"), msg
    assert "redis+sentinel://host:port,host:port/SERVICE" in msg


def test_unreachable_cluster_seeds_are_a_retryable_broker_error() -> None:
    with pytest.raises(BrokerUnavailable, match="no node of the Redis Cluster answered"):
        build_client("redis+cluster://127.0.0.1:1", socket_connect_timeout=1)


DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def test_the_scaling_doc_examples_are_what_tailrace_does() -> None:
    """docs/scaling.md cannot drift: its YAML validates, its spread table and refusal text
    are computed here."""
    text = DOC.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        ServiceConfig.model_validate(yaml.safe_load(block)["service"])
    rows = re.findall(r"^\| (\d+)(?: \(default\))? \| (\d+) / (\d+) / (\d+) \|$", text, re.M)
    assert len(rows) >= 5, "the spread table went missing"
    for row in rows:
        partitions, spread = int(row[0]), [int(x) for x in row[1:]]
        per_master = [0, 0, 0]
        for p in range(partitions):
            slot = key_slot(Keys("tr").raw(p).encode())
            per_master[0 if slot <= 5460 else 1 if slot <= 10922 else 2] += 1
        assert per_master == spread, (partitions, per_master, spread)
    client = FakeMeta(stored=8)
    with pytest.raises(PartitionCountChanged) as err:
        ensure_partition_count(client, Keys("tr"), 16)  # type: ignore[arg-type]
    shown = re.search(r"tailrace: (this pipeline .*?)\n```", text, re.S)
    assert shown is not None
    assert " ".join(shown.group(1).split()) == str(err.value)


class FakeMeta:
    """Just enough of a client for ensure_partition_count: a stored count."""

    def __init__(self, stored: int) -> None:
        self.stored = stored

    def hsetnx(self, _key: str, _field: str, _value: int) -> int:
        return 0

    def hget(self, _key: str, _field: str) -> bytes:
        return str(self.stored).encode()


def test_plan_spread_moves_the_fewest_partitions_to_within_one_of_each_other() -> None:
    from tailrace.slots import Move, plan_spread

    def slot(p: int) -> int:
        return 1000 + p

    assert plan_spread({"a": [3], "b": [2, 7], "c": [0, 1, 4, 5]}, slot) == [
        Move(5, 1005, "c", "a")]
    assert plan_spread({"a": [], "b": [], "c": [0, 1, 2, 3, 4, 5]}, slot) == [
        Move(5, 1005, "c", "a"), Move(4, 1004, "c", "b"), Move(3, 1003, "c", "a"),
        Move(2, 1002, "c", "b")]
    assert plan_spread({"a": [0, 1], "b": [2], "c": [3, 4]}, slot) == []
