"""The regex watchdog: a catastrophically backtracking pattern is stopped within its budget."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from pconf import batch, config

from processors.chain import Chain
from processors.safe_regex import WATCHDOG, RegexTimeout, SafePattern

EVIL = r"^(a+)+$"
EVIL_LINE = "a" * 40 + "!"


def test_backtracking_match_is_interrupted_after_its_cpu_budget() -> None:
    p = SafePattern(EVIL, budget_ms=30)
    cpu = time.process_time()
    with WATCHDOG.armed(), pytest.raises(RegexTimeout, match="budget of 30 ms"):
        p.match(EVIL_LINE)
    assert time.process_time() - cpu < 1.0  # unguarded, this match would run for years


def test_ordinary_matches_are_unaffected_while_armed() -> None:
    p = SafePattern(r"^(?P<a>\w+) (?P<b>\d+)$", budget_ms=5)
    with WATCHDOG.armed():
        for _ in range(20_000):
            m = p.search("word 123")
            assert m is not None and m.group("b") == "123"
        assert p.match("nope") is None


@pytest.mark.timeout(20)  # a guard left down would run the match for years
def test_each_keeps_every_item_of_a_loop_under_the_budget() -> None:
    # `each` arms the guard once for the whole loop: after one item timed out, a later
    # hostile item is stopped too, and a guarded `search` inside the loop gives the guard back.
    p = SafePattern(EVIL, budget_ms=20)
    outcomes: list[object] = []
    cpu = time.process_time()
    with WATCHDOG.armed():
        for text in p.each([EVIL_LINE, "aa", EVIL_LINE]):
            assert p.search("aaa") is not None
            try:
                outcomes.append(p.regex.search(text) is not None)
            except RegexTimeout:
                outcomes.append("timeout")
    assert outcomes == ["timeout", True, "timeout"]
    assert time.process_time() - cpu < 2.0
    assert not WATCHDOG.active  # the loop's guard is down after it


def test_arming_nests_and_disarms_the_timer() -> None:
    import signal

    with WATCHDOG.armed():
        with WATCHDOG.armed():
            pass
        assert signal.getitimer(signal.ITIMER_VIRTUAL)[1] > 0  # still armed by the outer
    assert signal.getitimer(signal.ITIMER_VIRTUAL) == (0.0, 0.0)


def test_outside_the_main_thread_the_budget_is_not_enforced_but_matching_works() -> None:
    result: list[object] = []

    def run() -> None:
        with WATCHDOG.armed():
            result.append(SafePattern(r"b+").search("aabbb"))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert result and result[0] is not None


def test_a_hostile_line_is_kept_unparsed_and_counted_while_the_batch_goes_on() -> None:
    cfg = config("""
parsers:
  - {name: evil, format: regex, regex: '^(?<a>a+)+$', match_budget_ms: 20}
pipeline:
  filters:
    - {name: parser, key: log, parser: evil, error_key: parse_error}
""")
    chain = Chain(cfg)
    cpu = time.process_time()
    res = chain.run(batch(["aaaa", EVIL_LINE, "aaa", EVIL_LINE]))
    assert time.process_time() - cpu < 2.0
    assert [r.get("a") for r in res.records] == ["aaaa", None, "aaa", None]
    assert res.records[1]["log"] == EVIL_LINE
    assert "budget" in res.records[1]["parse_error"]
    assert res.counters["regex_timeouts"] == 2 and res.counters["unmatched"] == 2


def test_grep_counts_a_timed_out_rule_as_not_matching() -> None:
    cfg = config(f"""
pipeline:
  filters:
    - {{name: grep, regex: 'log {EVIL}'}}
""")
    res = Chain(cfg).run(batch(["aaaa", EVIL_LINE]))
    assert [r["log"] for r in res.records] == ["aaaa"]
    assert res.counters["regex_timeouts"] == 1


def test_tailrace_parse_gives_up_on_a_hostile_line_and_goes_on(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tailrace.cli import cli

    cfg = tmp_path / "p.yaml"
    cfg.write_text("parsers:\n  - {name: evil, format: regex, regex: '^(?<a>a+)+$', "
                   "match_budget_ms: 20}\n")
    result = CliRunner().invoke(cli, ["parse", "-c", str(cfg), "--parser", "evil"],
                                input=f"aaaa\n{EVIL_LINE}\naa\n")
    assert result.exit_code == 1  # one line failed
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert [x.get("a") for x in lines] == ["aaaa", None, "aa"]
    assert "budget of 20 ms" in lines[1]["error"]
