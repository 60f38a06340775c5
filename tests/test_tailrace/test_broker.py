"""Broker error replies get tailrace's classes on tailrace's clients, and only there."""

from __future__ import annotations

import pytest
import redis
from redis._parsers.base import BaseParser
from redis_server import RedisServer

from tailrace.broker import (
    BROKER_ERRORS,
    BrokerFullError,
    MisconfError,
    NoReplicasError,
    PartitionCountChanged,
    ReplyParser,
    classify_reply,
    connect,
    ensure_groups,
)
from tailrace.errors import BrokerUnavailable
from tailrace.keys import PROCESSORS_GROUP, Keys
from tailrace.scriptcalls import Scripts


def test_redis_pys_own_reply_table_is_left_alone() -> None:
    import tailrace.broker  # noqa: F401 - importing it once patched redis-py for everyone

    assert "NOREPLICAS" not in BaseParser.EXCEPTION_CLASSES
    assert "MISCONF" not in BaseParser.EXCEPTION_CLASSES
    assert BaseParser.EXCEPTION_CLASSES["OOM"] is redis.exceptions.OutOfMemoryError


def test_noreplicas_is_a_broker_error_on_tailraces_client_only(fresh_redis: RedisServer) -> None:
    admin = fresh_redis.client()
    admin.config_set("min-replicas-to-write", 1)  # no replica: every write is refused
    ours = connect(fresh_redis.url)
    with pytest.raises(NoReplicasError) as err:
        ours.set("k", "v")
    assert isinstance(err.value, BROKER_ERRORS) and "min-replicas-to-write" in str(err.value)
    replies = ours.pipeline(transaction=False).set("k", "v").get("k").execute(
        raise_on_error=False)
    assert isinstance(replies[0], NoReplicasError) and replies[1] is None
    with pytest.raises(redis.exceptions.ResponseError) as plain:
        admin.set("k", "v")  # another client of the process: redis-py's classes, unchanged
    assert not isinstance(plain.value, NoReplicasError)
    admin.config_set("min-replicas-to-write", 0)
    ours.close()


def test_a_script_call_is_classified_whichever_client_sends_it(fresh_redis: RedisServer) -> None:
    plain = fresh_redis.client()
    keys = Keys("cls")
    ensure_groups(plain, keys, 1, [])
    token = Scripts(plain, keys).acquire(0, PROCESSORS_GROUP, "w", 10_000)
    plain.config_set("min-replicas-to-write", 1)
    with pytest.raises(NoReplicasError):
        Scripts(plain, keys).commit(0, PROCESSORS_GROUP, f"w:{token}", stage_in="raw",
                                    ids=[], outputs=[b"x"])
    plain.config_set("min-replicas-to-write", 0)


def test_oom_says_redis_is_full_and_is_a_broker_error(fresh_redis: RedisServer) -> None:
    admin = fresh_redis.client()
    admin.set("filler", b"x" * 2**20)
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 2**19)
    ours = connect(fresh_redis.url)
    try:
        with pytest.raises(BrokerFullError) as err:
            ours.set("more", b"y" * 1024)
        assert isinstance(err.value, BROKER_ERRORS) and "Redis is full" in str(err.value)
        assert str(err.value).startswith("OOM command not allowed")
    finally:
        admin.config_set("maxmemory", 0)
        ours.close()


def test_noscript_keeps_redis_pys_class_so_scripts_are_reloaded(
        fresh_redis: RedisServer) -> None:
    ours = connect(fresh_redis.url)
    with pytest.raises(redis.exceptions.NoScriptError):
        ours.evalsha("0" * 40, 0)
    keys = Keys("ns")
    ensure_groups(ours, keys, 1, [])
    scripts = Scripts(ours, keys)
    assert scripts.acquire(0, PROCESSORS_GROUP, "w", 10_000) == 1
    ours.script_flush()  # as after a restart: the next call loads it again
    assert scripts.acquire(0, PROCESSORS_GROUP, "w", 10_000) == 1  # held already: its token
    ours.close()


@pytest.mark.parametrize(("reply", "cls"), [
    ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
     MisconfError),
    ("NOREPLICAS Not enough good replicas to write.", NoReplicasError),
    ("OOM command not allowed when used memory > 'maxmemory'.", BrokerFullError),
    # Redis 6.2 reports a write refused inside a script as a script error:
    ("ERR Error running script (call to f_1): @user_script:3: @user_script: 3: -OOM command "
     "not allowed when used memory > 'maxmemory'.", BrokerFullError),
])
def test_error_replies_are_parsed_into_broker_errors(reply: str, cls: type) -> None:
    exc = ReplyParser.parse_error(reply)
    assert type(exc) is cls and isinstance(exc, BROKER_ERRORS)
    assert classify_reply(exc) is exc  # classifying twice changes nothing


def test_other_error_replies_keep_their_class() -> None:
    wrong = ReplyParser.parse_error("WRONGTYPE Operation against a key holding the wrong kind")
    assert type(wrong) is redis.exceptions.ResponseError
    assert not isinstance(wrong, BROKER_ERRORS)
    assert type(ReplyParser.parse_error("NOSCRIPT No matching script")) is (
        redis.exceptions.NoScriptError)


def test_a_changed_partition_count_is_not_retried_as_an_outage() -> None:
    exc = PartitionCountChanged("created with 4 partitions")
    assert not isinstance(exc, BrokerUnavailable) and not isinstance(exc, BROKER_ERRORS)
