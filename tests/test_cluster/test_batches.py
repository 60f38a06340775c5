"""Script batches on one server: NOSCRIPT recovery, WAIT for replicas, retries that are safe."""

from __future__ import annotations

import time

import pytest
import redis

from tailrace.broker import BROKER_ERRORS, NoReplicasError, NotReplicated, ensure_groups
from tailrace.keys import Keys
from tailrace.scriptcalls import ProduceResult, Scripts, WaitPolicy


def test_a_batch_reloads_scripts_the_server_forgot_and_runs_each_call_once(
        r: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    ensure_groups(r, keys, 2, [])
    scripts = Scripts(r, keys)
    r.script_flush()  # as after a restart, or on a promoted replica
    batch = scripts.batch()
    scripts.produce(0, "f", 0, 10, b"a", client=batch)
    scripts.produce(1, "f", 0, 10, b"b", client=batch)
    assert len(batch) == 2
    replies = [ProduceResult.parse(x) for x in batch.execute()]
    assert [x.status for x in replies] == ["ok", "ok"]
    assert len(batch) == 0
    assert (r.xlen(keys.raw(0)), r.xlen(keys.raw(1))) == (1, 1), "a call ran twice"


def test_wait_without_replicas_raises_not_replicated_and_the_retry_conflicts(
        r: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    ensure_groups(r, keys, 1, [])
    scripts = Scripts(r, keys, wait=WaitPolicy(replicas=1, timeout_ms=50))
    batch = scripts.batch(wait=True)
    scripts.produce(0, "f", 0, 10, b"a", client=batch)
    t0 = time.monotonic()
    with pytest.raises(NotReplicated, match="not confirmed by 1 replica") as err:
        batch.execute()
    assert time.monotonic() - t0 < 2
    assert isinstance(err.value, BROKER_ERRORS), "loops must retry it with backoff"
    # The write itself happened on the master; the agent's retry finds it.
    retry = scripts.batch()
    scripts.produce(0, "f", 0, 10, b"a", client=retry)
    assert ProduceResult.parse(retry.execute()[0]) == ProduceResult("conflict", offset=10)
    assert r.xlen(keys.raw(0)) == 1
    with pytest.raises(NotReplicated, match="holding back"):
        scripts.confirm(0)
    Scripts(r, keys).confirm(0)  # no WaitPolicy: nothing to confirm


def test_a_wait_batch_without_a_policy_sends_no_wait(r: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    ensure_groups(r, keys, 1, [])
    scripts = Scripts(r, keys)
    before = int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    batch = scripts.batch(wait=True)
    scripts.produce(0, "f", 0, 10, b"a", client=batch)
    batch.execute()
    assert int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0)) == before


def test_noreplicas_is_a_broker_error_that_names_the_setting() -> None:
    exc = NoReplicasError("Not enough good replicas to write.")
    assert isinstance(exc, BROKER_ERRORS)
    assert str(exc).startswith("NOREPLICAS Not enough good replicas")
    assert "min-replicas-to-write" in str(exc)
