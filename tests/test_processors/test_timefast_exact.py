"""The compiled time parser's shortcuts give the reference's float, bit for bit.

The 1-3 digit fraction path adds zone and fraction first (rounded once, in a table) and the
hour after: exact only from 2**30 on (processors/timefast.py, ``_QUICK_FROM``). These tests
check every second and every 1-3 digit fraction of the hours around that bound and the
other binade edges, for zones of every size, against ``StrptimeFormat``; and the long
fractions read by ``float(".digits")``, at every length.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from timeparts import counted_fast

from processors.timefast import _QUICK_FROM
from processors.timefmt import StrptimeFormat, TimeFormat, TimeFormatError

UTC = timezone.utc
ISO_FRAC_ZONE = "%Y-%m-%dT%H:%M:%S.%L%z"
ISO_FRAC = "%Y-%m-%dT%H:%M:%S.%L"
LOGGING = "%Y-%m-%d %H:%M:%S,%L"
#: The hour of 2**30 (the quick path's bound), the hour before it, the hours of the next
#: binade edges (2**31: 2038, 2**32: 2106) and of the last year a datetime shows, a leap
#: day; and hours of January 1970, where two roundings do differ with these zones (the
#: exact path's: one rounding).
HOURS = [datetime(1970, 1, 1, 4, tzinfo=UTC), datetime(1970, 1, 13, 3, tzinfo=UTC),
         datetime(2004, 1, 10, 12, tzinfo=UTC), datetime(2004, 1, 10, 13, tzinfo=UTC),
         datetime(2038, 1, 19, 3, tzinfo=UTC), datetime(2106, 2, 7, 6, tzinfo=UTC),
         datetime(9999, 12, 31, 23, tzinfo=UTC), datetime(2024, 2, 29, 23, tzinfo=UTC)]
FRACTIONS = [f"{i:0{n}d}" for n in (1, 2, 3) for i in range(10 ** n)]


def test_the_quick_path_bound_is_an_hour_start_in_2004() -> None:
    assert _QUICK_FROM == 2.0 ** 30
    assert datetime.fromtimestamp(_QUICK_FROM, UTC) == datetime(2004, 1, 10, 13, 37, 4,
                                                                tzinfo=UTC)


@pytest.mark.parametrize("hour", HOURS, ids=lambda h: h.strftime("%Y-%m-%dT%H"))
@pytest.mark.parametrize("zone", ["Z", "+00:00", "-0530", "+2359", "-23:59"])
def test_every_second_and_millisecond_of_an_hour_is_read_as_strptime_does(
        hour: datetime, zone: str) -> None:
    # Each of the 60 seconds (at a random minute) with each of the 1,110 fractions of
    # 1-3 digits: the quick path's two roundings against the reference's one.
    fast, reference, calls = counted_fast(ISO_FRAC_ZONE)
    rng = random.Random(hour.toordinal())
    for sec in range(60):
        d = hour + timedelta(minutes=rng.randrange(60), seconds=sec)
        head = d.strftime("%Y-%m-%dT%H:%M:%S.")
        for frac in FRACTIONS:
            text = f"{head}{frac}{zone}"
            assert fast(text) == reference.parse(text), text
    assert calls == []


@pytest.mark.parametrize("fmt", [ISO_FRAC_ZONE, ISO_FRAC, LOGGING])
def test_fractions_of_every_length_are_read_as_strptime_does(fmt: str) -> None:
    # 1-20 digits in turns, over hours before and after the quick path's bound, with
    # zones or none: float(".digits") (a "." before %L), int / 10**n (a ","), or a table.
    fast, reference, calls = counted_fast(fmt)
    rng = random.Random(7)
    sep = "," if fmt == LOGGING else "."
    zones = {ISO_FRAC_ZONE: ["Z", "+00:00", "-0530", "+05:30"], ISO_FRAC: ["", "Z", "-0800"],
             LOGGING: [""]}[fmt]
    for _ in range(6000):
        d = datetime(rng.choice([1971, 1999, 2004, 2024, 2100]), rng.randint(1, 12),
                     rng.randint(1, 28), rng.randrange(24), rng.randrange(60),
                     rng.randrange(60), tzinfo=UTC)
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20)))
        text = d.strftime("%Y-%m-%dT%H:%M:%S" if sep == "." else "%Y-%m-%d %H:%M:%S")
        text += sep + digits + rng.choice(zones)
        assert fast(text) == reference.parse(text), text
    assert calls == []


@pytest.mark.parametrize("text", [
    "2024-02-29T23:59:59.999Z", "2000-02-29T00:00:00.5+00:00", "2024-02-29T12:00:00.123456-0530",
    "1999-12-31T23:59:59.999999999+14:00", "2003-12-31T23:59:59.001Z",
    "1970-01-01T00:00:00.1Z", "1970-01-01T00:00:00.000000001Z"])
def test_leap_days_and_times_before_the_quick_path_are_exact(text: str) -> None:
    fast, reference, calls = counted_fast(ISO_FRAC_ZONE)
    assert fast(text) == reference.parse(text) and fast(text) == reference.parse(text)
    assert calls == []


@pytest.mark.parametrize("text", [
    "2023-02-29T00:00:00.5Z", "1900-02-29T00:00:00.5Z", "2024-02-30T00:00:00.123+02:00",
    "2024-05-06T07:08:09.1_2Z", "2024-05-06T07:08:09.1e5Z", "2024-05-06T07:08:09.12 Z",
    "2024-05-06T07:08:09.123456 Z", "2024-05-06T07:08:09.123456789 ", "2024-05-06T07:08:09.+1Z"])
def test_what_strptime_rejects_after_a_long_fraction_is_rejected(text: str) -> None:
    # float() takes "1_2", "1e5" and trailing blanks: the digits are checked first.
    tf = TimeFormat(ISO_FRAC_ZONE)
    tf.parse("2024-05-06T07:08:09.123456789Z")  # the long shape, tried first from now on
    with pytest.raises(TimeFormatError):
        StrptimeFormat(ISO_FRAC_ZONE).parse(text)
    with pytest.raises(TimeFormatError):
        tf.parse(text)


def test_a_fraction_in_other_digits_is_read_as_strptime_does() -> None:
    fast, reference, _ = counted_fast(ISO_FRAC_ZONE)
    fast("2024-05-06T07:08:09.123456789Z")
    for text in ("2024-05-06T07:08:09.١٢٣٤٥٦Z", "2024-05-06T07:08:09.١٢٣Z"):
        assert fast(text) == reference.parse(text)


def test_zone_forms_that_mean_utc_give_the_same_time() -> None:
    tf = TimeFormat(ISO_FRAC_ZONE)
    values = {tf.parse(f"2024-05-06T07:08:09.{d}{z}") for z in ("Z", "+00:00", "+0000", "-0000")
              for d in ("5", "500", "500000000")}
    assert values == {datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=UTC).timestamp()}
    assert tf.parse("2024-05-06T07:08:09.5-0530") - tf.parse("2024-05-06T07:08:09.5Z") == 19800


@pytest.mark.parametrize("fmt", ["%Y-%m-%dT%H:%M:%S%z", "%d/%b/%Y:%H:%M:%S %z", ISO_FRAC_ZONE])
def test_a_new_hour_of_a_day_already_read_is_checked_as_strptime_does(fmt: str) -> None:
    # The day is cached apart from the hour: every hour of a known day, good or not.
    tf, reference = TimeFormat(fmt), StrptimeFormat(fmt)
    d = datetime(2024, 2, 29, tzinfo=UTC)
    frac = ".5" if "%L" in fmt else ""
    head = d.strftime(fmt.split("%H")[0].replace("%L", ""))
    tail = f":07:08{frac}" + (" +0200" if " %z" in fmt else "Z")
    assert tf.parse(f"{head}00{tail}") == reference.parse(f"{head}00{tail}")
    for hh in [f"{h:02d}" for h in range(24)] + ["24", "99", "2a", " 1", "1 ", "٢٣", "²3"]:
        text = f"{head}{hh}{tail}"
        assert outcome(tf.parse, text) == outcome(reference.parse, text), text


def outcome(parse: Callable[[str], float], text: str) -> tuple[str, str]:
    try:
        return ("value", parse(text).hex())
    except TimeFormatError:
        return ("rejected", "")
