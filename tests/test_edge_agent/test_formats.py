"""Decoders: plain, CRI and docker lines, partial joining, multiline, safe points."""

from __future__ import annotations

import calendar
import random

import orjson
import pytest

from edge_agent.formats import (
    _cri_whole,
    _decode_cri,
    _decode_cri_lines,
    decode_plain,
    make_decoder,
    parse_rfc3339,
)
from edge_agent.joiner import MessageLimit
from edge_agent.multiline import MultilineRule
from edge_agent.options import MultilineOptions

T = "2024-05-01T12:00:00.250000000Z"


def cri(stream: str, flag: str, msg: str, t: str = T) -> bytes:
    return f"{t} {stream} {flag} {msg}\n".encode()


def docker(log: str, stream: str = "stdout", t: str = T) -> bytes:
    return orjson.dumps({"log": log, "stream": stream, "time": t}) + b"\n"


def rule(**kw: object) -> MultilineRule:
    return MultilineRule.build(MultilineOptions.model_validate(kw))


def test_plain_returns_complete_lines_with_offsets_and_keeps_the_partial_tail() -> None:
    d = decode_plain(b"ab\ncde\r\nf", 100)
    assert d.lines == [b"ab", b"cde"]
    assert d.offsets == [100, 103]
    assert d.consumed == 8  # "f" waits for its newline


def test_plain_passes_invalid_utf8_and_binary_bytes_unchanged() -> None:
    raw = b"\xff\xfe\x00bin\x01\n\xc3(\n"
    assert decode_plain(raw, 0).lines == [b"\xff\xfe\x00bin\x01", b"\xc3("]


def test_rfc3339_with_fraction_and_zone_offset() -> None:
    assert parse_rfc3339(b"2024-05-01T12:00:00.5Z") == pytest.approx(1714564800.5)
    assert parse_rfc3339(b"2024-05-01T14:00:00+02:00") == pytest.approx(1714564800.0)


def _rfc3339_before(ts: bytes) -> float:
    """parse_rfc3339 before its fast path for ``.digits`` + ``Z`` (the reference)."""
    t = ts[:19].decode()
    secs = calendar.timegm((int(t[0:4]), int(t[5:7]), int(t[8:10]), int(t[11:13]),
                            int(t[14:16]), int(t[17:19]), 0, 0, 0))
    rest = ts[19:]
    frac = 0.0
    if rest[:1] == b".":
        i = 1
        while i < len(rest) and 48 <= rest[i] <= 57:
            i += 1
        frac = float(b"0" + rest[:i])
        rest = rest[i:]
    if rest and rest[:1] in (b"+", b"-"):
        sign = 1 if rest[:1] == b"+" else -1
        secs -= sign * (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60)
    return secs + frac


def test_rfc3339_gives_what_it_gave_before_its_fast_path_on_every_shape() -> None:
    rng = random.Random(3)
    tails = ["Z", "+02:00", "-05:30", "", "z", "1e5Z", "_1Z", " Z", "١Z", "5ZZ", "+00:00Z"]
    for _ in range(20_000):
        head = (f"{rng.randint(1970, 2100):04d}-{rng.randint(1, 12):02d}-"
                f"{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
                f"{rng.randint(0, 59):02d}")
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 12)))
        frac = rng.choice(["", "." + digits, "." + digits, "." + digits + rng.choice("x:.")])
        ts = (head + frac + rng.choice(tails)).encode()
        assert parse_rfc3339(ts) == _rfc3339_before(ts), ts


def test_cri_keeps_runtime_time_and_stream_and_joins_partials() -> None:
    data = cri("stdout", "P", "hel") + cri("stdout", "P", "lo ") + cri("stdout", "F", "world") \
        + cri("stderr", "F", "oops")
    d = make_decoder("cri", None)(data, 10, False)
    assert d.lines == [b"hello world", b"oops"]
    assert d.offsets[0] == 10
    assert d.streams == ["stdout", "stderr"]
    assert d.times == [pytest.approx(1714564800.25)] * 2
    assert d.consumed == len(data)


def test_cri_open_partial_run_is_not_consumed_until_its_end_arrives() -> None:
    head = cri("stdout", "F", "one")
    data = head + cri("stdout", "P", "par") + cri("stdout", "P", "tial")
    d = make_decoder("cri", None)(data, 0, False)
    assert d.lines == [b"one"]
    assert d.consumed == len(head)


def test_cri_open_partial_is_emitted_as_it_is_when_final() -> None:
    data = cri("stdout", "P", "par") + cri("stdout", "P", "tial")
    d = make_decoder("cri", None)(data, 0, True)
    assert d.lines == [b"partial"]
    assert d.consumed == len(data)


def test_cri_other_stream_waits_behind_an_open_partial_then_keeps_start_order() -> None:
    a = cri("stdout", "P", "long-")
    b = cri("stderr", "F", "err")
    c = cri("stdout", "F", "line")
    dec = make_decoder("cri", None)
    d = dec(a + b, 0, False)
    assert d.lines == [] and d.consumed == 0  # stderr line must not pass the open run
    d = dec(a + b + c, 0, False)
    assert d.lines == [b"long-line", b"err"]
    assert d.offsets == [0, len(a)]
    assert d.consumed == len(a + b + c)


def _random_cri_line(rng: random.Random, odd: bool) -> bytes:
    """A runtime's whole line; with ``odd``, maybe one the C-speed path must leave alone."""
    head = (f"{rng.randint(1970, 2100):04d}-{rng.randint(1, 12):02d}-"
            f"{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}")
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 9)))
    frac = "" if rng.random() < 0.05 else "." + digits
    stream, flag, zone = rng.choice(["stdout", "stderr"]), "F", "Z"
    msg = bytes(rng.choice(b"ab {}\"\r\t:=F P\xc3\xa9\xff") for _ in range(rng.randint(0, 40)))
    if odd:
        kind = rng.randrange(9)
        if kind == 0:
            flag = "P"
        elif kind == 1:
            zone = rng.choice(["+02:00", "-05:30", "z", ""])
        elif kind == 2:
            stream = rng.choice(["custom", "stdout ", "", "STDOUT"])
        elif kind == 3:
            head = head[:5] + "13" + head[7:]  # no such month: the loop reads time 0.0
        elif kind == 4:
            frac = "."
        elif kind == 5:
            return rng.choice([b"", b"not cri", b"2024-05-01T12:00:00Z stdout F"])
        elif kind == 6:
            msg = b"x" * 300  # over the limit below
        elif kind == 7:
            head = rng.choice(["x ", " ", "1"]) + head  # a valid line after other bytes
    return f"{head}{frac}{zone} {stream} {flag} ".encode() + msg


def test_cri_whole_lines_at_c_speed_give_what_the_line_loop_gives() -> None:
    """The regex pass over whole-message chunks (_cri_whole) and the line loop agree on
    messages, offsets, times (bit for bit), streams and what is consumed; chunks with any
    other line take the loop."""
    rng = random.Random(11)
    taken = 0
    for n in range(3000):
        odd = n % 3 == 0
        lines = [_random_cri_line(rng, odd and rng.random() < 0.2)
                 for _ in range(rng.randint(1, 30))]
        chunk = b"\n".join(lines) + rng.choice([b"\n", b"\n", b"\n2024-05-01T12:00:00.1Z std"])
        base = rng.randint(0, 10**6)
        limit = rng.choice([None, MessageLimit(200, "split")])
        final = rng.random() < 0.5
        loop = _decode_cri_lines(chunk, chunk.rfind(b"\n"), base, final, None, limit)
        assert _decode_cri(chunk, base, final, None, limit) == loop, chunk
        whole = _cri_whole(chunk, chunk.rfind(b"\n"), base, limit)
        if whole is not None:
            taken += 1
            assert whole == loop, chunk
            assert [t.hex() for t in whole.times or []] == [t.hex() for t in loop.times or []]
        else:
            assert odd, f"a chunk of whole lines took the loop: {chunk!r}"
    assert taken > 1500, f"the C-speed path took only {taken} of 3000 chunks"


def test_cri_malformed_line_passes_through_whole() -> None:
    d = make_decoder("cri", None)(b"not a cri line\n", 0, False)
    assert d.lines == [b"not a cri line"]
    assert d.streams == ["unknown"]


def test_docker_joins_lines_without_trailing_newline() -> None:
    data = docker("part one, ") + docker("part two\n") + docker("err\n", "stderr")
    d = make_decoder("docker", None)(data, 0, False)
    assert d.lines == [b"part one, part two", b"err"]
    assert d.streams == ["stdout", "stderr"]


def test_docker_line_that_is_not_json_passes_through() -> None:
    d = make_decoder("docker", None)(b'{"broken\n', 0, False)
    assert d.lines == [b'{"broken']


JAVA = (b"2024-05-01 12:00:00 ERROR request failed\n"
        b"java.lang.IllegalStateException: boom\n"
        b"\tat com.example.Svc.handle(Svc.java:42)\n"
        b"\tat com.example.Main.main(Main.java:7)\n"
        b"Caused by: java.io.IOException: disk\n"
        b"\t... 2 more\n"
        b"2024-05-01 12:00:01 INFO next\n")


def test_multiline_start_regex_joins_until_the_next_start_line() -> None:
    dec = make_decoder("plain", rule(start=r"^\d{4}-\d\d-\d\d"))
    d = dec(JAVA, 0, False)
    assert len(d.lines) == 1
    assert d.lines[0].startswith(b"2024-05-01 12:00:00 ERROR") and d.lines[0].endswith(b"more")
    assert d.lines[0].count(b"\n") == 5
    assert d.consumed == JAVA.index(b"2024-05-01 12:00:01")  # the last message may still grow
    d = dec(JAVA, 0, True)
    assert d.lines[-1] == b"2024-05-01 12:00:01 INFO next"
    assert d.consumed == len(JAVA)


def test_java_preset_groups_a_stack_trace_with_its_log_line() -> None:
    d = make_decoder("plain", rule(preset="java"))(JAVA, 0, True)
    assert [ln.split(b"\n")[0] for ln in d.lines] == [
        b"2024-05-01 12:00:00 ERROR request failed", b"2024-05-01 12:00:01 INFO next"]


def test_python_preset_groups_a_traceback() -> None:
    text = (b"ERROR:root:failed\n"
            b"Traceback (most recent call last):\n"
            b'  File "app.py", line 3, in <module>\n'
            b"    main()\n"
            b"ValueError: bad value\n"
            b"INFO:root:still running\n")
    d = make_decoder("plain", rule(preset="python"))(text, 0, True)
    assert len(d.lines) == 2
    assert d.lines[0].endswith(b"ValueError: bad value")


def test_go_preset_groups_a_panic() -> None:
    text = (b"panic: runtime error: index out of range\n"
            b"\n"
            b"goroutine 1 [running]:\n"
            b"main.main()\n"
            b"\t/app/main.go:10 +0x1d\n"
            b"exit status 2\n"
            b"level=info msg=restarted\n")
    d = make_decoder("plain", rule(preset="go"))(text, 0, True)
    assert len(d.lines) == 2
    assert d.lines[0].startswith(b"panic:") and d.lines[0].endswith(b"exit status 2")


def test_multiline_never_mixes_two_streams() -> None:
    data = (cri("stdout", "F", "Exception in thread main")
            + cri("stderr", "F", "unrelated error line")
            + cri("stdout", "F", "\tat a.b(C.java:1)")
            + cri("stderr", "F", "\tat x.y(Z.java:2)"))
    d = make_decoder("cri", rule(continuation=r"^\s"))(data, 0, True)
    assert sorted(zip(d.streams or [], d.lines, strict=True)) == [
        ("stderr", b"unrelated error line\n\tat x.y(Z.java:2)"),
        ("stdout", b"Exception in thread main\n\tat a.b(C.java:1)"),
    ]
    assert d.offsets == sorted(d.offsets)


def test_multiline_message_is_cut_at_max_lines() -> None:
    data = b"start\n" + b" cont\n" * 9
    d = make_decoder("plain", rule(start="^start", max_lines=4))(data, 0, True)
    assert [ln.count(b"\n") + 1 for ln in d.lines] == [4, 4, 2]


def test_multiline_message_is_cut_before_max_bytes() -> None:
    data = b"start\n" + (b" " + b"x" * 40 + b"\n") * 6
    d = make_decoder("plain", rule(start="^start", max_bytes=100))(data, 0, True)
    assert all(len(ln) <= 100 for ln in d.lines)
    assert b"\n".join(d.lines) == data[:-1]


def test_multiline_safe_point_lets_a_restart_resume_without_loss_or_repeat() -> None:
    """Decoding in two pieces at the consumed offset yields the same messages as at once."""
    dec = make_decoder("plain", rule(start=r"^\d{4}"))
    whole = dec(JAVA + JAVA, 0, True)
    first = dec(JAVA + JAVA[:50], 0, False)  # cut inside a line: only complete lines count
    cut = first.consumed
    rest = dec((JAVA + JAVA)[cut:], cut, True)
    assert first.lines + rest.lines == whole.lines
    assert first.offsets + rest.offsets == whole.offsets
