"""Time formats: strftime with fractions and zones, compiled once and cached."""

from __future__ import annotations

import calendar
from datetime import datetime, timezone

import pytest

from processors.timefmt import TimeFormat, TimeFormatError, parse_offset


def test_fraction_of_any_length_and_numeric_zones() -> None:
    tf = TimeFormat("%Y-%m-%dT%H:%M:%S.%L%z")
    base = calendar.timegm((2024, 5, 6, 7, 8, 9))
    assert tf.parse("2024-05-06T07:08:09.5Z") == pytest.approx(base + 0.5)
    assert tf.parse("2024-05-06T09:08:09.123456789+02:00") == pytest.approx(base + 0.123456789)
    assert tf.parse("2024-05-06T02:08:09.000001-0500") == pytest.approx(base + 1e-6)


def test_clf_time_with_zone() -> None:
    tf = TimeFormat("%d/%b/%Y:%H:%M:%S %z")
    assert tf.parse("10/Oct/2023:13:55:36 -0700") == calendar.timegm((2023, 10, 10, 20, 55, 36))


def test_repeated_seconds_hit_the_cache_with_different_fractions() -> None:
    tf = TimeFormat("%Y-%m-%d %H:%M:%S,%L")
    a = tf.parse("2024-01-01 00:00:01,100")
    b = tf.parse("2024-01-01 00:00:01,250")
    assert b - a == pytest.approx(0.15)
    assert "2024-01-01 00:00:01" in tf.cache  # one strptime for the whole second


def test_a_format_without_year_takes_the_current_year() -> None:
    t = TimeFormat("%b %d %H:%M:%S").parse("Jan  2 03:04:05")
    assert datetime.fromtimestamp(t, timezone.utc).year == datetime.now(timezone.utc).year


def test_text_that_does_not_match_raises() -> None:
    with pytest.raises(TimeFormatError):
        TimeFormat("%Y-%m-%d").parse("02/03/2024")
    with pytest.raises(TimeFormatError):
        TimeFormat("%H:%M:%S.%L").parse("10:11:12")


def test_offsets() -> None:
    assert parse_offset("+0200") == 7200 and parse_offset("-05:30") == -19800
    assert parse_offset("Z") == 0
    with pytest.raises(ValueError):
        parse_offset("two hours")
