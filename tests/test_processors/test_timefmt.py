"""Time formats: the compiled parser gives exactly what cached ``strptime`` gives.

Every covered format is checked against :class:`StrptimeFormat` (the reference, and the
parser every format used before) on many random timestamps, valid and not: the value must
be the same float, bit for bit, and a text the reference rejects must be rejected too.
"""

from __future__ import annotations

import calendar
import random
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from timeparts import counted_fast

from processors.timeepoch import MAX_EPOCH
from processors.timefmt import StrptimeFormat, TimeFormat, TimeFormatError, parse_offset

CLF = "%d/%b/%Y:%H:%M:%S %z"
ISO_FRAC_ZONE = "%Y-%m-%dT%H:%M:%S.%L%z"
ISO_ZONE = "%Y-%m-%dT%H:%M:%S%z"
ISO_FRAC = "%Y-%m-%dT%H:%M:%S.%L"  # docker, syslog-rfc5424: a zone may follow the text
ISO_FRAC_LITERAL_Z = "%Y-%m-%dT%H:%M:%S.%LZ"
SPACE = "%Y-%m-%d %H:%M:%S"
LOGGING = "%Y-%m-%d %H:%M:%S,%L"  # Python's logging
MICROS = "%Y-%m-%d %H:%M:%S.%f"
SYSLOG = "%b %d %H:%M:%S"
ISO_LITERAL_Z = "%Y-%m-%dT%H:%M:%SZ"  # Fluent Bit configs often spell the zone as a literal
US = "%m/%d/%Y %H:%M:%S"
COVERED = [CLF, ISO_FRAC_ZONE, ISO_ZONE, ISO_FRAC, ISO_FRAC_LITERAL_Z, SPACE, LOGGING, MICROS,
           SYSLOG, ISO_LITERAL_Z, US]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
ZONES = ["Z", "+0000", "-0000", "+00:00", "+0530", "+05:30", "-0800", "-08:00", "+2359",
         "-23:59", "+1400", "+2400", "+0160", "+05:60", "z", "+05", "+053000", "", " Z",
         "+9999", "UTC", "+05:3"]
OFFSETS = [0, 7200, -(5 * 3600 + 1800)]


def outcome(parse: object, text: str) -> tuple[str, float | str]:
    try:
        value = parse(text)  # type: ignore[operator]
    except TimeFormatError:
        return ("rejected", "")
    return ("value", value.hex())  # the same float, bit for bit


def timestamp(rng: random.Random, fmt: str) -> str:
    """Text for ``fmt`` from random fields, a good share of them out of range or odd."""
    def pick(usual: range, odd: list[int]) -> int:
        return rng.choice(odd) if rng.random() < 0.05 else rng.choice(usual)

    year = pick(range(1970, 2101), [0, 1, 1900, 2000, 9999])
    month = pick(range(1, 13), [0, 13])
    day = 29 if month == 2 and rng.random() < 0.3 else pick(range(1, 32), [0, 32])  # leap days
    hour, minute, second = pick(range(24), [24, 99]), pick(range(60), [60]), pick(range(60),
                                                                                 [60, 61])
    # Every length: 1-3 digits are a table, up to 15 an int, more a float.
    digits = "".join(rng.choice("0123456789") for _ in range(rng.choice(
        [1, 2, 3, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 12, 15, 16, 17, 20])))
    if rng.random() < 0.05:
        digits = rng.choice(["", "1a", "١٢", "12 ", "١٢٣٤٥٦", "12345٦789", "+123", "1_234",
                             " 1234", "1234 ", "²", "12²456"])
    zone = rng.choice(ZONES)
    name = MONTHS[(month - 1) % 12] if 1 <= month <= 12 else "Foo"
    if rng.random() < 0.25:
        name = rng.choice([name.upper(), name.lower(), name.swapcase(), "Sept", "ſep"])
    dd = rng.choice([f"{day:02d}", f"{day:2d}", str(day)])
    mm = str(month) if rng.random() < 0.1 else f"{month:02d}"
    hh = str(hour) if rng.random() < 0.1 else f"{hour:02d}"
    ymd = f"{year:04d}-{mm}-{dd}"
    hms = f"{hh}:{minute:02d}:{second:02d}"
    text = {
        CLF: f"{dd}/{name}/{year:04d}:{hms} {zone}",
        ISO_FRAC_ZONE: f"{ymd}T{hms}.{digits}{zone}",
        ISO_ZONE: f"{ymd}T{hms}{zone}",
        ISO_FRAC: f"{ymd}T{hms}.{digits}{rng.choice(['', zone])}",
        ISO_FRAC_LITERAL_Z: f"{ymd}T{hms}.{digits}Z",
        SPACE: f"{ymd} {hms}{rng.choice(['', '', zone])}",
        LOGGING: f"{ymd} {hms},{digits}",
        MICROS: f"{ymd} {hms}.{digits}",
        SYSLOG: f"{name} {dd} {hms}",
        ISO_LITERAL_Z: f"{ymd}T{hms}{rng.choice(['Z', 'Z', zone])}",
        US: f"{mm}/{dd}/{year:04d} {hms}",
    }[fmt]
    if rng.random() < 0.06:  # one character off
        i = rng.randrange(len(text))
        text = text[:i] + rng.choice("0 9:-+.TZaé") + text[i + 1:]
    return text


@pytest.mark.parametrize("fmt", COVERED)
def test_every_format_users_write_compiles_into_the_fast_parser(fmt: str) -> None:
    assert TimeFormat(fmt).fast


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("fmt", COVERED)
@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_the_fast_parser_gives_what_strptime_gives_on_random_timestamps(
        fmt: str, offset: int, seed: int) -> None:
    rng = random.Random(seed)
    fast = TimeFormat(fmt, offset).parse
    reference = StrptimeFormat(fmt, offset).parse
    for _ in range(500):
        text = timestamp(rng, fmt)
        assert outcome(fast, text) == outcome(reference, text), text


@pytest.mark.parametrize("fmt", [ISO_FRAC_ZONE, ISO_FRAC, ISO_FRAC_LITERAL_Z, LOGGING])
def test_lines_whose_fraction_and_zone_change_shape_are_read_as_strptime_does(fmt: str) -> None:
    # The fast path tries the shape of the line before (where the fraction ends): one
    # parser, fed shapes in turns, must read each line on its own.
    rng = random.Random(13)
    fast = TimeFormat(fmt).parse
    reference = StrptimeFormat(fmt).parse
    sep = "," if fmt == LOGGING else "."
    ends = {ISO_FRAC_ZONE: ["Z", "+02:00", "-0800", "+0000"], ISO_FRAC: ["", "Z", "+05:30"],
            ISO_FRAC_LITERAL_Z: ["Z"], LOGGING: [""]}[fmt]
    head = "2024-02-29T23:59:59" if fmt != LOGGING else "2024-02-29 23:59:59"
    for _ in range(3000):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 18)))
        text = f"{head}{sep}{digits}{rng.choice(ends)}"
        assert outcome(fast, text) == outcome(reference, text), text


def epoch_reference(fmt: str, text: str) -> tuple[str, float | str]:
    """What ``%s`` / ``%s.%L`` mean, written plainly: ASCII digits, at most 12 and at most
    MAX_EPOCH, and a fraction added as the other formats add it."""
    whole, _, digits = text.partition(".") if fmt != "%s" else (text, "", "")
    ok = (whole.isdigit() and whole.isascii() and len(whole) <= 12 and int(whole) <= MAX_EPOCH
          and (fmt == "%s" or (digits.isdigit() and digits.isascii())))
    if not ok:
        return ("rejected", "")
    return ("value", (int(whole) + (float("0." + digits) if digits else 0.0)).hex())


@pytest.mark.parametrize("fmt", ["%s", "%s.%L"])
@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_epoch_seconds_on_random_texts(fmt: str, seed: int) -> None:
    rng = random.Random(seed)
    parse = TimeFormat(fmt).parse
    for _ in range(500):
        secs = rng.choice([rng.randrange(10 ** rng.randint(1, 12)), rng.randrange(10 ** 10),
                           MAX_EPOCH - rng.randrange(2000), MAX_EPOCH + rng.randrange(2000)])
        whole = rng.choice([str(secs), str(secs), f"{secs:012d}", "", "-1", " 1", "1e9", "١٢٣٤"])
        digits = "".join(rng.choice("0123456789") for _ in range(rng.choice([1, 2, 3, 3, 6, 9])))
        text = whole if fmt == "%s" else rng.choice(
            [f"{whole}.{digits}", f"{whole}.{digits}", f"{whole}.", whole, f"{whole}.{digits}x"])
        assert outcome(parse, text) == epoch_reference(fmt, text), text


@pytest.mark.parametrize("fmt", COVERED)
@settings(max_examples=150, deadline=None)
@given(text=st.text(st.sampled_from("0123456789 :/-+.TZJanOctzé\t"), max_size=40))
def test_any_text_is_read_or_rejected_as_strptime_does(fmt: str, text: str) -> None:
    assert outcome(TimeFormat(fmt).parse, text) == outcome(StrptimeFormat(fmt).parse, text)


@pytest.mark.parametrize(("fmt", "text"), [
    (CLF, "10/Oct/2023:13:55:36 -0700"), (CLF, "29/feb/2024:00:00:00 +05:30"),
    (ISO_FRAC_ZONE, "2024-05-06T07:08:09.123456789+02:00"),
    (ISO_FRAC_ZONE, "2024-12-31T23:59:59.5Z"),
    (ISO_ZONE, "2024-05-06T07:08:09-0800"), (ISO_FRAC, "2024-05-06T07:08:09.123Z"),
    (ISO_FRAC, "2024-05-06T07:08:09.123"), (SPACE, "2024-05-06 07:08:09"),
    (SYSLOG, "Jan  2 03:04:05"), (SYSLOG, "Dec 31 23:59:59"), (LOGGING, "2024-05-06 07:08:09,001"),
])
def test_canonical_timestamps_never_reach_strptime(fmt: str, text: str) -> None:
    fast, reference, calls = counted_fast(fmt)
    assert fast(text) == reference.parse(text) and fast(text) == reference.parse(text)
    assert calls == []


@pytest.mark.parametrize(("fmt", "render"), [
    (CLF, "%d/%b/%Y:%H:%M:%S -0700"), (ISO_ZONE, "%Y-%m-%dT%H:%M:%S+05:30"), (SPACE, None),
    (ISO_FRAC_ZONE, "%Y-%m-%dT%H:%M:%S.{ms}Z"), (ISO_FRAC, "%Y-%m-%dT%H:%M:%S.{ns}"),
])
def test_a_quiet_log_a_line_a_minute_never_reaches_strptime(fmt: str, render: str | None) -> None:
    # Hours and the "MM:SS" tables, not a cache of minutes: a new minute on every line,
    # over a leap day and a new year, is read without strptime and as strptime reads it.
    fast, reference, calls = counted_fast(fmt)
    rng = random.Random(5)
    for start in (datetime(2024, 2, 28, 12, tzinfo=timezone.utc),
                  datetime(2023, 12, 31, 12, tzinfo=timezone.utc)):
        for i in range(2000):
            d = datetime.fromtimestamp(start.timestamp() + 61 * i, timezone.utc)
            text = d.strftime(render or fmt).format(ms=f"{rng.randrange(1000):03d}",
                                                    ns=f"{rng.randrange(10 ** 9):09d}")
            assert fast(text) == reference.parse(text), text
    assert calls == []


@pytest.mark.parametrize(("fmt", "text"), [
    (CLF, "32/Oct/2023:13:55:36 -0700"), (CLF, "10/Foo/2023:13:55:36 -0700"),
    (CLF, "10/Oct/2023:24:00:00 +0000"), (CLF, "10/Oct/2023:13:55:60 +0000"),
    (CLF, "10/Oct/2023:13:55:36 +2400"), (CLF, "10/Oct/2023:13:55:36"),
    (SPACE, "2023-02-29 00:00:00"), (SPACE, "2024-13-01 00:00:00"), (SPACE, "0000-01-01 00:00:00"),
    (ISO_FRAC_ZONE, "2024-05-06T07:08:09.+02:00"), (ISO_FRAC_ZONE, "2024-05-06T07:08:09.5"),
    (SYSLOG, "Feb 29 00:00:00"),  # no year: strptime checks the day against 1900
])
def test_what_strptime_rejects_is_rejected(fmt: str, text: str) -> None:
    with pytest.raises(TimeFormatError):
        StrptimeFormat(fmt).parse(text)
    with pytest.raises(TimeFormatError, match="does not match format"):
        TimeFormat(fmt).parse(text)


def test_fraction_of_any_length_and_numeric_zones() -> None:
    tf = TimeFormat(ISO_FRAC_ZONE)
    base = calendar.timegm((2024, 5, 6, 7, 8, 9))
    assert tf.parse("2024-05-06T07:08:09.5Z") == pytest.approx(base + 0.5)
    assert tf.parse("2024-05-06T09:08:09.123456789+02:00") == pytest.approx(base + 0.123456789)
    assert tf.parse("2024-05-06T02:08:09.000001-0500") == pytest.approx(base + 1e-6)


def test_clf_time_with_zone() -> None:
    tf = TimeFormat(CLF)
    assert tf.parse("10/Oct/2023:13:55:36 -0700") == calendar.timegm((2023, 10, 10, 20, 55, 36))


def test_the_strptime_reference_parses_each_second_once_whatever_the_fraction() -> None:
    tf = StrptimeFormat(LOGGING)
    a = tf.parse("2024-01-01 00:00:01,100")
    b = tf.parse("2024-01-01 00:00:01,250")
    assert b - a == pytest.approx(0.15)
    assert "2024-01-01 00:00:01" in tf.cache  # one strptime for the whole second


def test_a_format_without_year_takes_the_current_year() -> None:
    t = TimeFormat(SYSLOG).parse("Jan  2 03:04:05")
    assert datetime.fromtimestamp(t, timezone.utc).year == datetime.now(timezone.utc).year


def test_formats_the_fast_parser_does_not_cover_still_work_through_strptime() -> None:
    tf = TimeFormat("%a %b %d %H:%M:%S %Y")  # apache error log: the year comes last
    assert not tf.fast
    assert tf.parse("Wed Oct 11 14:32:52 2000") == calendar.timegm((2000, 10, 11, 14, 32, 52))


def test_epoch_seconds_with_or_without_a_fraction() -> None:
    assert TimeFormat("%s").parse("1700000000") == 1700000000.0
    assert TimeFormat("%s.%L").parse("1700000000.123") == 1700000000 + 0.123
    assert TimeFormat("%s").parse(str(MAX_EPOCH)) == float(MAX_EPOCH)
    for text in ("", "-1", "17e8", "1700000000.5", str(MAX_EPOCH + 1), "١٧", " 1"):
        with pytest.raises(TimeFormatError):
            TimeFormat("%s").parse(text)
    for text in ("1700000000", "1700000000.", ".5", "1.5.5"):
        with pytest.raises(TimeFormatError):
            TimeFormat("%s.%L").parse(text)
    with pytest.raises(ValueError, match="must be the whole format"):
        TimeFormat("%s %z")


@given(secs=st.integers(0, MAX_EPOCH), digits=st.text("0123456789", min_size=1, max_size=9))
def test_epoch_with_a_fraction_adds_it_as_the_other_formats_do(secs: int, digits: str) -> None:
    assert TimeFormat("%s.%L").parse(f"{secs}.{digits}") == float(secs) + float("0." + digits)


def test_text_that_does_not_match_raises() -> None:
    with pytest.raises(TimeFormatError):
        TimeFormat("%Y-%m-%d").parse("02/03/2024")
    with pytest.raises(TimeFormatError):
        TimeFormat("%H:%M:%S.%L").parse("10:11:12")


def test_an_unknown_directive_is_refused_when_the_format_is_built() -> None:
    with pytest.raises(ValueError, match="unsupported directive %Q"):
        TimeFormat("%Q")


def test_offsets() -> None:
    assert parse_offset("+0200") == 7200 and parse_offset("-05:30") == -19800
    assert parse_offset("Z") == 0
    with pytest.raises(ValueError):
        parse_offset("two hours")
