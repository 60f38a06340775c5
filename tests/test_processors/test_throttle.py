"""The throttle filter: Fluent Bit's sliding window, shared by every worker through Redis."""

from __future__ import annotations

import pytest
import redis
from pconf import config, records

from processors.chain import Chain
from processors.filters.throttle import parse_interval
from tailrace.errors import ConfigError
from tailrace.keys import Keys
from tailrace.ratelimit import LocalRateLimits, RedisRateLimits

HOUR = 3600.0  # long panes: a test never straddles two of them


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def chain(yaml: str, limits: object) -> Chain:
    return Chain(config("pipeline:\n  filters:\n    - " + yaml + "\n"),
                 rate_limits=limits)  # type: ignore[arg-type]


def passed(c: Chain, n: int, tag: str = "t", **fields: object) -> int:
    return len(c.run_records(records(*({**fields, "i": i} for i in range(n)), tag=tag)).records)


def test_slow_start_then_a_sliding_window_average() -> None:
    clock = Clock()
    c = chain("{name: throttle, alias: th, rate: 5, window: 3, interval: 1s}",
              LocalRateLimits(clock))
    got = []
    for _ in range(5):
        got.append(passed(c, 10))
        clock.t += 1
    # pane 1: 5 of 5x1; pane 2: 10-5; pane 3: 15-10; then the window slides: 15 - (5+5)
    assert got == [5, 5, 5, 5, 5]
    clock.t += 10  # quiet for more than two windows: a slow start again
    assert passed(c, 3) == 3 and passed(c, 20) == 2


def test_the_limit_is_per_tag_by_default_and_per_key_when_asked() -> None:
    clock = Clock()
    c = chain("{name: throttle, rate: 2, window: 1, interval: 1h}", LocalRateLimits(clock))
    assert passed(c, 5, tag="a") == 2 and passed(c, 5, tag="b") == 2
    k = chain("{name: throttle, rate: 1, window: 1, interval: 1h, "
              "key: \"$kubernetes['ns']\"}", LocalRateLimits(clock))
    recs = records(*({"kubernetes": {"ns": ns}, "n": i} for i, ns in enumerate("aabbc")))
    assert [r["n"] for r in k.run_records(recs).records] == [0, 2, 4]


def test_two_workers_share_one_limit_through_redis(redis_url: str, prefix: str) -> None:
    clients = [redis.Redis.from_url(redis_url) for _ in range(2)]
    workers = [chain("{name: throttle, alias: shared, rate: 30, window: 2, interval: 1h}",
                     RedisRateLimits(c, Keys(prefix))) for c in clients]
    through = sum(passed(w, 20) for _ in range(2) for w in workers)
    assert through == 30  # one pane seen: 30 in total, not 30 per worker
    for c in clients:
        c.close()


def test_one_redis_call_per_batch_whatever_the_number_of_subjects(
        r: redis.Redis, redis_url: str, prefix: str) -> None:
    c = chain("{name: throttle, rate: 100, interval: 1h}",
              RedisRateLimits(redis.Redis.from_url(redis_url), Keys(prefix)))

    def script_calls() -> int:
        stats = r.info("commandstats")
        return sum(int(stats.get(k, {}).get("calls", 0)) for k in ("cmdstat_evalsha",
                                                                     "cmdstat_eval"))

    recs = [{**rec, "_tag": f"tag{i % 5}"} for i, rec in enumerate(records(*[{}] * 500))]
    assert len(c.run_records(recs).records) == 500  # 100 per tag, 5 tags
    before = script_calls()
    res = c.run_records([dict(x) for x in recs])
    assert script_calls() - before == 1
    assert res.records == [] and res.counters["throttled"] == 500
    keys = list(r.scan_iter(match=f"{prefix}:*throttle*"))
    assert len(keys) == 5 and all(r.pttl(k) > 0 for k in keys)  # expire on their own


def test_dropped_records_are_counted() -> None:
    c = chain("{name: throttle, rate: 1, window: 1, interval: 1h}", LocalRateLimits(Clock()))
    res = c.run_records(records({}, {}, {}))
    assert len(res.records) == 1 and res.counters["throttled"] == 2


def test_intervals_in_fluent_bit_notation() -> None:
    assert parse_interval("3s") == 3 and parse_interval("1.5m") == 90
    assert parse_interval("0.5h") == 1800 and parse_interval("500ms") == 0.5
    with pytest.raises(ConfigError, match="1.5m"):
        config("pipeline:\n  filters:\n    - {name: throttle, rate: 1, interval: often}\n")


def test_print_status_logs_the_drops(caplog: pytest.LogCaptureFixture) -> None:
    c = chain("{name: throttle, alias: th, rate: 1, window: 1, interval: 1h, print_status: on}",
              LocalRateLimits(Clock()))
    with caplog.at_level("INFO"):
        c.run_records(records({}, {}, {}))
    assert "throttle_records_dropped: dropped 2 of 3 records over 1 per 3600s" in caplog.text


def test_the_redis_and_the_local_service_grant_alike(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    services = [RedisRateLimits(client, Keys(prefix)), LocalRateLimits()]
    grants = [[svc.acquire("s", {"a": n, "b": 2 * n}, rate=7, window=3, interval_s=HOUR)
               for n in (3, 10, 4)] for svc in services]
    assert grants[0] == grants[1] == [{"a": 3, "b": 6}, {"a": 4, "b": 1}, {"a": 0, "b": 0}]
    client.close()


def test_documented_window_example_drops_one_message_of_the_last_pane() -> None:
    # Fluent Bit's throttle docs: rate 5, window 5; panes of 1,3,5,7,3,4,7 messages become
    # 1,3,5,7,3,4,6 (the window's average would be 5.2 > 5, so one message is dropped).
    clock = Clock()
    c = chain("{name: throttle, rate: 5, window: 5, interval: 1s}", LocalRateLimits(clock))
    got = []
    for n in (1, 3, 5, 7, 3, 4, 7):
        got.append(passed(c, n))
        clock.t += 1
    assert got == [1, 3, 5, 7, 3, 4, 6]
