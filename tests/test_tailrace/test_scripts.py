"""The Lua scripts against a real Redis: producer, leases, fenced commit, trimming."""

from __future__ import annotations

import pytest
import redis
from redis.commands.core import Script
from redis_server import RedisServer

from tailrace import scripts
from tailrace.broker import BrokerFullError, ensure_groups
from tailrace.errors import Fenced
from tailrace.keys import PROCESSORS_GROUP, Keys
from tailrace.scriptcalls import DeadLetter, ProduceResult, Scripts
from tailrace.wire import FORMAT_VERSION, RECORDS_VERSION


@pytest.fixture
def setup(r: redis.Redis, prefix: str) -> tuple[Scripts, Keys]:
    keys = Keys(prefix)
    ensure_groups(r, keys, 2, ["sink:a", "sink:b"])
    return Scripts(r, keys), keys


def scripts_on(server: RedisServer, prefix: str, partitions: int = 1
               ) -> tuple[redis.Redis, Keys, Scripts]:
    """A client of a server of the test's own (its config may be changed), with groups."""
    r = server.client()
    keys = Keys(prefix)
    ensure_groups(r, keys, partitions, [])
    return r, keys, Scripts(r, keys)


def produce(s: Scripts, start: int, end: int, payload: bytes = b"x", limit: int = 0,
            file_id: str = "f1") -> ProduceResult:
    return ProduceResult.parse(s.produce(0, file_id, start, end, payload, limit))


def test_produce_appends_once_and_a_resent_batch_conflicts(setup: tuple[Scripts, Keys],
                                                           r: redis.Redis) -> None:
    s, k = setup
    first = produce(s, 0, 100)
    assert first.status == "ok" and first.entry_id
    again = produce(s, 0, 100)
    assert again == ProduceResult("conflict", offset=100)
    assert produce(s, 100, 150).status == "ok"
    assert r.xlen(k.raw(0)) == 2
    assert r.hget(k.offsets(0), "f1") == b"150"


def test_produce_accepts_a_start_from_the_local_checkpoint_when_redis_has_none(
        setup: tuple[Scripts, Keys], r: redis.Redis) -> None:
    s, k = setup
    assert produce(s, 5000, 5100).status == "ok"
    assert r.hget(k.offsets(0), "f1") == b"5100"


def test_produce_without_payload_only_moves_the_offset(setup: tuple[Scripts, Keys],
                                                       r: redis.Redis) -> None:
    s, k = setup
    res = produce(s, 0, 70_000, payload=b"")
    assert res.status == "ok" and res.entry_id == ""
    assert r.xlen(k.raw(0)) == 0
    assert r.hget(k.offsets(0), "f1") == b"70000"


def test_produce_refuses_over_the_backlog_limit_and_writes_nothing(
        setup: tuple[Scripts, Keys], r: redis.Redis) -> None:
    s, k = setup
    produce(s, 0, 10, limit=2)
    produce(s, 10, 20, limit=2)
    res = produce(s, 20, 30, limit=2)
    assert res == ProduceResult("backpressure", backlog=2)
    assert r.hget(k.offsets(0), "f1") == b"20"


def test_produce_refuses_while_redis_memory_is_over_the_limit_and_writes_nothing(
        fresh_redis: RedisServer, prefix: str) -> None:
    """The exact memory check of PRODUCE (the agent's periodic look can be a second late)."""
    r, k, s = scripts_on(fresh_redis, prefix)
    used = int(r.info("memory")["used_memory"])

    def attempt(start: int, **kw: int | None) -> ProduceResult:
        return ProduceResult.parse(s.produce(0, "f", start, start + 10, b"x", **kw))

    assert attempt(0, memory_limit=used // 2).status == "memory"  # an explicit limit
    assert attempt(0, memory_limit=0).status == "ok"  # 0: 90% of maxmemory, none is set
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", int(used / 0.95))  # 90% of it is below what Redis uses
    full = attempt(10, memory_limit=0)
    r.config_set("maxmemory", 0)
    assert full.status == "memory" and full.memory >= used * 0.9
    assert r.xlen(k.raw(0)) == 1 and r.hget(k.offsets(0), "f") == b"10"  # nothing written
    assert attempt(10).status == "ok"  # no limit asked for: no check
    r.close()


def test_a_lease_token_grows_on_every_acquisition(setup: tuple[Scripts, Keys]) -> None:
    s, _ = setup
    t1 = s.acquire(0, "g", "w1", 10_000)
    assert t1 > 0
    assert s.acquire(0, "g", "w2", 10_000) == 0, "held by w1"
    assert s.acquire(0, "g", "w1", 10_000) == t1, "a retried acquire returns the same token"
    assert s.release(0, "g", f"w1:{t1}") == 1
    t2 = s.acquire(0, "g", "w2", 10_000)
    assert t2 > t1
    assert s.renew(0, "g", f"w1:{t1}", 10_000) == 0, "an old owner cannot renew"
    assert s.renew(0, "g", f"w2:{t2}", 10_000) == 1


def _read(r: redis.Redis, k: Keys, consumer: str, n: int = 10) -> list[bytes]:
    resp = r.xreadgroup(PROCESSORS_GROUP, consumer, {k.raw(0): ">"}, count=n)
    return [e[0] for e in resp[0][1]] if resp else []


def _handed_over(s: Scripts, r: redis.Redis, k: Keys) -> tuple[list[bytes], int, int]:
    """A batch read by w1, whose lease then went to w2: (its ids, w1's token, w2's)."""
    produce(s, 0, 10)
    ids = _read(r, k, "w1")
    t1 = s.acquire(0, PROCESSORS_GROUP, "w1", 10_000)
    s.release(0, PROCESSORS_GROUP, f"w1:{t1}")
    return ids, t1, s.acquire(0, PROCESSORS_GROUP, "w2", 10_000)


def test_commit_is_fenced_when_the_lease_changed_hands(setup: tuple[Scripts, Keys],
                                                      r: redis.Redis) -> None:
    s, k = setup
    ids, t1, t2 = _handed_over(s, r, k)
    with pytest.raises(Fenced):
        s.commit(0, PROCESSORS_GROUP, f"w1:{t1}", stage_in="raw", ids=ids, outputs=[b"o"])
    assert r.xlen(k.out(0)) == 0, "a fenced commit writes nothing"
    assert r.xpending(k.raw(0), PROCESSORS_GROUP)["pending"] == 1
    n = s.commit(0, PROCESSORS_GROUP, f"w2:{t2}", stage_in="raw", ids=ids, outputs=[b"o"],
                 dead_letters=[DeadLetter("records", b"r", "processor", "grep", "bad", "1-1")])
    assert n == 1
    assert r.xpending(k.raw(0), PROCESSORS_GROUP)["pending"] == 0
    dlq = r.xrange(k.dlq(0))
    assert dlq[0][1][b"error"] == b"bad" and dlq[0][1][b"plugin"] == b"grep"


def test_a_retried_commit_writes_nothing_twice(setup: tuple[Scripts, Keys],
                                               r: redis.Redis) -> None:
    s, k = setup
    produce(s, 0, 10)
    ids = _read(r, k, "w1")
    t = s.acquire(0, PROCESSORS_GROUP, "w1", 10_000)
    owner = f"w1:{t}"
    s.commit(0, PROCESSORS_GROUP, owner, stage_in="raw", ids=ids, outputs=[b"o"],
             checkpoint={"a": 1})
    s.commit(0, PROCESSORS_GROUP, owner, stage_in="raw", ids=ids, outputs=[b"o"],
             checkpoint={"a": 1})
    assert r.xlen(k.out(0)) == 1


def test_a_batch_goes_in_a_transaction_beside_produce_and_is_taken_back_on_refusal(
        setup: tuple[Scripts, Keys], r: redis.Redis) -> None:
    """The agent's batch is XADDed in a MULTI before PRODUCE, which gets no payload (Redis
    7's Lua hashes every byte passed to it); a conflict or the backlog limit deletes it
    again, so a group reading the stream never sees it."""
    s, k = setup
    r.config_resetstat()
    ok = produce(s, 0, 10, payload=b"batch-1")
    stats = r.info("commandstats")
    assert stats["cmdstat_exec"]["calls"] == 1 and stats["cmdstat_eval"]["calls"] == 1
    assert "cmdstat_evalsha" not in stats
    assert ok.status == "ok" and [e[0] for e in r.xrange(k.raw(0))] == [ok.entry_id.encode()]
    assert produce(s, 0, 10, payload=b"resent") == ProduceResult("conflict", offset=10)
    assert produce(s, 10, 20, payload=b"over", limit=1) == ProduceResult("backpressure",
                                                                         backlog=1)
    got = r.xreadgroup(PROCESSORS_GROUP, "w", {k.raw(0): ">"}, count=10)[0][1]
    assert [f[b"b"] for _i, f in got] == [b"batch-1"]
    assert r.hget(k.offsets(0), "f1") == b"10"


def test_batches_refused_by_a_full_redis_are_refused_each_and_write_nothing(
        fresh_redis: RedisServer, prefix: str) -> None:
    r, keys, s = scripts_on(fresh_redis, prefix, partitions=2)
    r.set("filler", b"x" * 2**20)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", int(r.info("memory")["used_memory"]) - 2**19)
    try:
        batch = s.batch()
        s.produce(0, "f1", 0, 10, b"a" * 1000, client=batch)
        s.produce(1, "f2", 0, 10, b"b" * 1000, client=batch)
        refused = batch.execute()
    finally:
        r.config_set("maxmemory", 0)
    assert [type(e) for e in refused] == [BrokerFullError, BrokerFullError]
    assert r.xlen(keys.raw(0)) == r.xlen(keys.raw(1)) == 0
    assert r.hget(keys.offsets(0), "f1") is None and r.hget(keys.offsets(1), "f2") is None
    batch = s.batch()  # room again: the same pipeline goes through, one reply each
    s.produce(0, "f1", 0, 10, b"a" * 1000, client=batch)
    s.produce(1, "f2", 0, 10, b"b" * 1000, client=batch)
    assert [ProduceResult.parse(x).status for x in batch.execute()] == ["ok", "ok"]
    assert r.xlen(keys.raw(0)) == r.xlen(keys.raw(1)) == 1


def test_outputs_go_in_a_transaction_beside_the_script_not_through_it(
        setup: tuple[Scripts, Keys], r: redis.Redis) -> None:
    """Redis 7's Lua hashes every byte passed to a script: a processor's outputs (most of
    a commit's bytes) are XADDed in a MULTI before the script, which gets only their count."""
    s, k = setup
    produce(s, 0, 10)
    ids = _read(r, k, "w1")
    owner = f"w1:{s.acquire(0, PROCESSORS_GROUP, 'w1', 10_000)}"
    r.config_resetstat()
    n = s.commit(0, PROCESSORS_GROUP, owner, stage_in="raw", ids=ids,
                 outputs=[b"o1", b"o2", b"o3"])
    stats = r.info("commandstats")
    assert n == 3
    assert stats["cmdstat_exec"]["calls"] == 1 and stats["cmdstat_eval"]["calls"] == 1
    assert "cmdstat_evalsha" not in stats
    assert [f[b"b"] for _i, f in r.xrange(k.out(0))] == [b"o1", b"o2", b"o3"]
    assert r.xpending(k.raw(0), PROCESSORS_GROUP)["pending"] == 0


def test_a_fenced_or_repeated_commit_takes_back_only_its_own_outputs(
        setup: tuple[Scripts, Keys], r: redis.Redis) -> None:
    s, k = setup
    before = [r.xadd(k.out(0), {"v": RECORDS_VERSION, "b": b"old%d" % i}) for i in range(3)]
    ids, t1, t2 = _handed_over(s, r, k)
    with pytest.raises(Fenced):
        s.commit(0, PROCESSORS_GROUP, f"w1:{t1}", stage_in="raw", ids=ids,
                 outputs=[b"n1", b"n2"])
    assert [e[0] for e in r.xrange(k.out(0))] == before, "only the fenced outputs went"
    assert s.commit(0, PROCESSORS_GROUP, f"w2:{t2}", stage_in="raw", ids=ids,
                    outputs=[b"n1", b"n2"]) == 5
    assert s.commit(0, PROCESSORS_GROUP, f"w2:{t2}", stage_in="raw", ids=ids,
                    outputs=[b"n1", b"n2"]) == 0  # already committed: nothing twice
    got = r.xreadgroup("sink:a", "c", {k.out(0): ">"}, count=10)[0][1]
    assert [f[b"b"] for _i, f in got] == [b"old0", b"old1", b"old2", b"n1", b"n2"]


def test_trim_keeps_everything_a_group_has_not_acknowledged(setup: tuple[Scripts, Keys],
                                                            r: redis.Redis) -> None:
    s, k = setup
    ids = [r.xadd(k.out(0), {"v": "1", "b": str(i)}) for i in range(5)]
    # sink:a reads and acks 3; sink:b reads 2 and acks 1 (one still pending).
    a = r.xreadgroup("sink:a", "c", {k.out(0): ">"}, count=3)[0][1]
    r.xack(k.out(0), "sink:a", *[e[0] for e in a])
    b = r.xreadgroup("sink:b", "c", {k.out(0): ">"}, count=2)[0][1]
    r.xack(k.out(0), "sink:b", b[0][0])
    trimmed, minid = s.trim(k.out(0))
    assert trimmed == 1, "only the entry both groups acknowledged goes"
    assert minid == b[1][0].decode()
    assert [e[0] for e in r.xrange(k.out(0))] == ids[1:]


def test_trim_of_a_stream_without_groups_removes_nothing(r: redis.Redis, prefix: str) -> None:
    keys = Keys(prefix)
    s = Scripts(r, keys)
    r.xadd(keys.dlq(0), {"v": "1"})
    assert s.trim(keys.dlq(0)) == (0, "")
    assert r.xlen(keys.dlq(0)) == 1


def test_dead_letter_pending_moves_poison_to_the_dlq_and_acks(setup: tuple[Scripts, Keys],
                                                              r: redis.Redis) -> None:
    s, k = setup
    produce(s, 0, 10, payload=b"poison")
    ids = _read(r, k, "w1")
    t = s.acquire(0, PROCESSORS_GROUP, "w1", 10_000)
    n = s.dead_letter_pending(0, PROCESSORS_GROUP, f"w1:{t}", stage_in="raw", kind="raw",
                              stage="processors", reason="delivered too often", ids=ids)
    assert n == 1
    entry = r.xrange(k.dlq(0))[0][1]
    assert entry[b"b"] == b"poison" and entry[b"kind"] == b"raw"
    assert entry[b"source"] == ids[0]
    assert r.xpending(k.raw(0), PROCESSORS_GROUP)["pending"] == 0


def test_every_reply_code_means_one_thing() -> None:
    codes = {name: getattr(scripts, name) for name in scripts.__all__
             if name.startswith("CODE_")}
    assert len(set(codes.values())) == len(codes), codes


def test_a_fenced_commit_and_a_fenced_dead_lettering_are_told_from_a_produce_conflict(
        setup: tuple[Scripts, Keys], r: redis.Redis) -> None:
    """PRODUCE's CONFLICT and COMMIT's FENCED were both 0: each reply now decodes alone."""
    s, k = setup
    produce(s, 0, 10)
    assert produce(s, 0, 10).status == "conflict"
    ids = _read(r, k, "w1")
    with pytest.raises(Fenced):  # no lease at all
        s.commit(0, PROCESSORS_GROUP, "w1:1", stage_in="raw", ids=ids)
    with pytest.raises(Fenced):
        s.dead_letter_pending(0, PROCESSORS_GROUP, "w1:1", stage_in="raw", kind="raw",
                              stage="processors", reason="r", ids=ids)
    assert r.xpending(k.raw(0), PROCESSORS_GROUP)["pending"] == 1, "nothing acked"


def test_no_script_writes_a_wire_version_of_its_own() -> None:
    """The version of what a script appends is an argument (tailrace.wire), not a literal."""
    for name in scripts.__all__:
        text = getattr(scripts, name)
        if isinstance(text, str):
            assert "'v', '" not in text, f"{name} writes a literal wire version"


def test_scripts_registers_every_script_of_the_module(r: redis.Redis, prefix: str) -> None:
    registered = {v.script for v in vars(Scripts(r, Keys(prefix))).values()
                  if isinstance(v, Script)}
    texts = {getattr(scripts, n) for n in scripts.__all__ if not n.startswith("CODE_")}
    assert registered == texts


def test_entries_keep_the_wire_version_they_are_given(setup: tuple[Scripts, Keys],
                                                      r: redis.Redis) -> None:
    s, k = setup
    produce(s, 0, 10, payload=b"batch")
    assert r.xrange(k.raw(0))[0][1][b"v"] == str(FORMAT_VERSION).encode()
    ids = _read(r, k, "w1")
    t = s.acquire(0, PROCESSORS_GROUP, "w1", 10_000)
    s.commit(0, PROCESSORS_GROUP, f"w1:{t}", stage_in="raw", ids=ids, outputs=[b"o"],
             dead_letters=[DeadLetter("records", b"r", "processor", "grep", "bad", "1-1",
                                      version=RECORDS_VERSION)])
    assert r.xrange(k.out(0))[0][1][b"v"] == str(RECORDS_VERSION).encode()
    assert r.xrange(k.dlq(0))[0][1][b"v"] == str(RECORDS_VERSION).encode()


def test_a_poison_entry_keeps_its_own_wire_version_in_the_dead_letter(
        setup: tuple[Scripts, Keys], r: redis.Redis) -> None:
    """A version-2 processed entry dead-lettered by a sink stays readable as version 2."""
    s, k = setup
    group = "sink:a"
    new = r.xadd(k.out(0), {"v": "2", "b": b"v2 payload"})
    old = r.xadd(k.out(0), {"v": "1", "b": b"v1 payload"})
    r.xreadgroup(group, "w1", {k.out(0): ">"})
    t = s.acquire(0, group, "w1", 10_000)
    assert s.dead_letter_pending(0, group, f"w1:{t}", stage_in="out", kind="records",
                                 stage=group, reason="too often", ids=[new, old]) == 2
    assert [(e[b"b"], e[b"v"]) for _, e in r.xrange(k.dlq(0))] == [
        (b"v2 payload", b"2"), (b"v1 payload", b"1")]
