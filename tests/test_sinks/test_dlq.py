"""Reading and pruning the dead-letter streams, and ``tailrace dlq`` on the command line."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
import redis
from click.testing import CliRunner, Result
from sinkdata import add_dead_letter, make_records, sink_config

from sinks.dlq import DeadLetterStore, Selection, parse_ref
from sinks.replay import replay_ids
from tailrace.cli.dlq import parse_when
from tailrace.cli.main import cli
from tailrace.keys import Keys
from tailrace.wire import RawBatch, encode_raw

PARTITIONS = 2


@pytest.fixture
def dlq_cli(tmp_path: Path, redis_url: str, keys: Keys) -> Iterator[Any]:
    cfg = sink_config(tmp_path, keys.prefix, [
        {"name": "file", "alias": "archive", "path": str(tmp_path / "a.log")},
        {"name": "stdout", "alias": "search"},
    ], partitions=PARTITIONS)
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, ["dlq", *args, "-c", str(cfg), "--broker", redis_url],
                                  input=input, catch_exceptions=False)

    yield invoke
    for s, h in saved.items():  # the RQ worker of `dlq replay` installs its own
        signal.signal(s, h)


def test_entries_are_listed_newest_first_across_partitions(r: redis.Redis, keys: Keys) -> None:
    a = add_dead_letter(r, keys, 0, error="first", entry_id="1000-0")
    b = add_dead_letter(r, keys, 1, error="second", entry_id="2000-0")
    c = add_dead_letter(r, keys, 0, error="third", stage="processor", plugin="grep.0",
                        entry_id="3000-0")
    store = DeadLetterStore(r, keys, PARTITIONS)
    assert [e.id for e in store.latest()] == [c, b, a]
    assert [e.id for e in store.latest(limit=2)] == [c, b]
    assert [e.id for e in store.latest(Selection(stage="processor"))] == [c]
    assert store.counts() == {0: 2, 1: 1}


def test_an_entry_is_found_by_partition_and_id_or_by_id_alone(r: redis.Redis,
                                                              keys: Keys) -> None:
    recs = make_records(2)
    dl = add_dead_letter(r, keys, 1, records=recs, source="9-9")
    store = DeadLetterStore(r, keys, PARTITIONS)
    for ref in (f"1/{dl}", dl):
        e = store.get(ref)
        assert e is not None and e.partition == 1 and e.source == "9-9"
        assert e.records() == recs and e.size() == 2
    assert store.get(f"0/{dl}") is None
    assert parse_ref("3/1-2") == (3, "1-2")


def test_a_raw_entry_shows_its_batch_or_why_it_does_not_decode(r: redis.Redis,
                                                               keys: Keys) -> None:
    raw = encode_raw(RawBatch("a", "tail.0", "web", "/var/log/x.log", "f", 0, 8,
                              [b"one", b"two"], [0, 4]))
    good = add_dead_letter(r, keys, 0, kind="raw", payload=raw, stage="processors")
    bad = add_dead_letter(r, keys, 0, kind="raw", payload=b"\xc1", stage="processor")
    store = DeadLetterStore(r, keys, PARTITIONS)
    e = store.get(good)
    assert e is not None and e.size() == 2
    batch = e.raw_batch()
    assert batch is not None and batch.lines == [b"one", b"two"]
    e = store.get(bad)
    assert e is not None and e.raw_batch() is None and e.size() == 0


def test_purge_removes_the_selected_entries_and_their_replay_marks(r: redis.Redis,
                                                                   keys: Keys) -> None:
    ids = [add_dead_letter(r, keys, 0) for _ in range(3)]
    other = add_dead_letter(r, keys, 1, stage="processor")
    replay_ids(r, keys, 0, ids[:2])
    store = DeadLetterStore(r, keys, PARTITIONS)
    assert store.purge(only_replayed=True) == 2
    assert {e.id for e in store.latest()} == {other, ids[2]}
    assert r.hlen(keys.dlq_replayed(0)) == 0
    assert store.purge(Selection(stage="processor")) == 1
    assert store.purge() == 1 and store.counts() == {0: 0, 1: 0}


@pytest.mark.parametrize("text, expected", [
    ("2h", 1_700_000_000_000 - 7_200_000),
    ("90m", 1_700_000_000_000 - 5_400_000),
    ("2023-11-14T22:13:20Z", 1_700_000_000_000),
    ("2023-11-14", 1_699_920_000_000),
    ("1700000000", 1_700_000_000_000),
])
def test_times_are_relative_iso_or_epoch(text: str, expected: int) -> None:
    assert parse_when(text, now=1_700_000_000.0) == expected


def test_a_bad_time_says_what_is_expected() -> None:
    with pytest.raises(Exception, match="use 30m, 2h, 7d"):
        parse_when("yesterday")


# -- the command line ----------------------------------------------------------------------

def test_cli_list_shows_entries_and_json_lines(r: redis.Redis, keys: Keys,
                                               dlq_cli: Any) -> None:
    dl = add_dead_letter(r, keys, 1, error="es: 400 document_parsing_exception: [code]",
                         records=make_records(3))
    res = dlq_cli("list")
    assert res.exit_code == 0, res.output
    assert f"1/{dl}" in res.output and "document_parsing_exception" in res.output
    assert "dead letters: 1" in res.output
    (line,) = dlq_cli("list", "--json").output.splitlines()
    doc = orjson.loads(line)
    assert doc["ref"] == f"1/{dl}" and doc["size"] == 3 and doc["stage"] == "sink:search"


def test_cli_show_prints_the_reason_and_the_records(r: redis.Redis, keys: Keys,
                                                    dlq_cli: Any) -> None:
    dl = add_dead_letter(r, keys, 0, error="es: 400 mapper_parsing_exception",
                         records=make_records(1))
    res = dlq_cli("show", f"0/{dl}")
    assert res.exit_code == 0
    assert "mapper_parsing_exception" in res.output and '"_id":"r0000000"' in res.output
    missing = dlq_cli("show", "0/1-1")
    assert missing.exit_code == 1 and "no dead letter 0/1-1" in missing.output


def test_cli_replay_runs_the_jobs_and_a_second_run_finds_nothing_to_do(
        r: redis.Redis, keys: Keys, dlq_cli: Any) -> None:
    for i in range(5):
        add_dead_letter(r, keys, i % 2, stage="sink:search", records=make_records(1, start=i))
    dry = dlq_cli("replay", "--dry-run")
    assert "5 dead letters to replay in 2 jobs" in dry.output
    assert r.xlen(keys.out(0)) == 0
    res = dlq_cli("replay", "--chunk", "2")
    assert res.exit_code == 0, res.output
    assert "5 replayed" in res.output and "3/3 jobs done" in res.output
    replayed = [x for p in (0, 1) for _, f in r.xrange(keys.out(p))
                for x in msgpack.unpackb(f[b"b"])]
    assert sorted(x["_id"] for x in replayed) == [f"r{i:07d}" for i in range(5)]
    again = dlq_cli("replay")
    assert "0 dead letters to replay" in again.output and "5 replayed before" in again.output
    runs = dlq_cli("runs", "--json")
    assert orjson.loads(runs.output.splitlines()[0])["replayed"] == 5


def test_cli_replay_enqueue_only_leaves_the_jobs_to_a_worker(r: redis.Redis, keys: Keys,
                                                             dlq_cli: Any) -> None:
    add_dead_letter(r, keys, 0)
    res = dlq_cli("replay", "--enqueue-only", "--output", "archive")
    assert res.exit_code == 0 and "tailrace worker" in res.output
    assert r.xlen(keys.out(0)) == 0
    assert r.llen(f"rq:queue:{keys.queue('replay')}") == 1


def test_cli_replay_refuses_an_unknown_output(dlq_cli: Any) -> None:
    res = dlq_cli("replay", "--output", "nope")
    assert res.exit_code == 2 and "no output named 'nope'" in res.output


def test_cli_purge_asks_first_unless_told_yes(r: redis.Redis, keys: Keys,
                                              dlq_cli: Any) -> None:
    add_dead_letter(r, keys, 0)
    declined = dlq_cli("purge", input="n\n")
    assert declined.exit_code == 1 and r.xlen(keys.dlq(0)) == 1
    res = dlq_cli("purge", "--yes")
    assert res.exit_code == 0 and "purged 1" in res.output and r.xlen(keys.dlq(0)) == 0
