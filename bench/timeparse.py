"""Time parsing micro-benchmark: the compiled parser against cached ``strptime``.

For each time format users write, makes N timestamps in which every line has a new time
and times ``parse`` over them, old and new side by side in one run:

- ``old``: :class:`processors.timefmt.StrptimeFormat`, what every format used before
  (``strptime`` once per distinct second, the fraction added arithmetically);
- ``new``: :class:`processors.timefmt.TimeFormat`, the compiled parser (strptime only for
  what it does not take).

Spacings (``--spacing``): ``second`` (each line one second after the last: no two lines
share a second), ``backfill`` (0-3 s apart, as a month of logs read at once), ``minute``
(61 s apart: every line a new minute, the compiled parser's worst case) and ``burst``
(10 lines a second, each with its own fraction). Fractions are random on every line.
CPU time (``time.process_time``) per line, including the call; each run starts with a
fresh parser (cold caches) and each chunk of 5,000 lines counts with its best run.

With ``--before DIR`` (a checkout of an older revision, e.g. ``git worktree add
/tmp/before REV``), that checkout's ``TimeFormat`` runs too, in turns with this one on
the same chunks, in a ``before`` column: a change compared side by side in one run.

    python bench/timeparse.py                    # 200,000 lines, every spacing
    python bench/timeparse.py --lines 1000000 --spacing second
    python bench/timeparse.py --before /tmp/before --spacing second
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import random
import sys
import time
import types
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from processors.timefmt import StrptimeFormat, TimeFormat  # noqa: E402

UTC = timezone.utc


def _frac(rng: random.Random, digits: int) -> str:
    return f"{rng.randrange(10 ** digits):0{digits}d}"


#: name -> (format, render(datetime, rng) -> text)
FORMATS: dict[str, tuple[str, Callable[[datetime, random.Random], str]]] = {
    "nginx/apache": ("%d/%b/%Y:%H:%M:%S %z",
                     lambda d, r: d.strftime("%d/%b/%Y:%H:%M:%S ") + r.choice(
                         ["+0000", "-0700", "+0530"])),
    "ISO, ms, Z (%L%z)": ("%Y-%m-%dT%H:%M:%S.%L%z",
                          lambda d, r: d.strftime("%Y-%m-%dT%H:%M:%S.") + _frac(r, 3) + "Z"),
    "RFC 3339, us, +02:00": ("%Y-%m-%dT%H:%M:%S.%L%z",
                             lambda d, r: d.strftime("%Y-%m-%dT%H:%M:%S.") + _frac(r, 6)
                             + "+02:00"),
    "CRI, ns, Z (%L%z)": ("%Y-%m-%dT%H:%M:%S.%L%z",
                          lambda d, r: d.strftime("%Y-%m-%dT%H:%M:%S.") + _frac(r, 9) + "Z"),
    "CRI, ns trimmed (Go)": ("%Y-%m-%dT%H:%M:%S.%L%z",  # RFC3339Nano drops trailing zeros
                             lambda d, r: d.strftime("%Y-%m-%dT%H:%M:%S.")
                             + (_frac(r, 9).rstrip("0") or "0") + "Z"),
    "docker (%L, zone after)": ("%Y-%m-%dT%H:%M:%S.%L",
                                lambda d, r: d.strftime("%Y-%m-%dT%H:%M:%S.") + _frac(r, 9)
                                + "Z"),
    "ISO, no fraction (%z)": ("%Y-%m-%dT%H:%M:%S%z",
                              lambda d, r: d.strftime("%Y-%m-%dT%H:%M:%S") + "-0800"),
    "%Y-%m-%d %H:%M:%S": ("%Y-%m-%d %H:%M:%S", lambda d, r: d.strftime("%Y-%m-%d %H:%M:%S")),
    "syslog %b %d %H:%M:%S": ("%b %d %H:%M:%S",
                              lambda d, r: d.strftime("%b ") + f"{d.day:2d}"
                              + d.strftime(" %H:%M:%S")),
    "epoch %s": ("%s", lambda d, r: str(int(d.timestamp()))),
    "epoch ms %s.%L": ("%s.%L", lambda d, r: f"{int(d.timestamp())}.{_frac(r, 3)}"),
}

SPACINGS: dict[str, Callable[[random.Random], float]] = {
    "second": lambda r: 1.0,
    "backfill": lambda r: float(r.randint(0, 3)),
    "minute": lambda r: 61.0,
    "burst": lambda r: 0.1,
}


def texts(render: Callable[[datetime, random.Random], str], spacing: Callable[[random.Random],
          float], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    # March: a year-less syslog time is read in the current year, where Feb 29 may not be.
    t = datetime(2024, 3, 1, 22, 0, 0, tzinfo=UTC)
    out = []
    for _ in range(n):
        out.append(render(t, rng))
        t += timedelta(seconds=spacing(rng))
    return out


def per_line(makers: list[Callable[[], Callable[[str], float]]], lines: list[str],
             repeat: int, chunk: int = 5000) -> list[float]:
    """CPU µs per line for each parser maker: each of ``repeat`` runs parses every line with
    fresh parsers (cold caches), the makers in turns on each chunk; each chunk counts with
    its best run, so a run slowed by another process on this shared machine does not count
    (the machine is often busy)."""
    n = (len(lines) + chunk - 1) // chunk
    best = [[float("inf")] * n for _ in makers]
    for _ in range(repeat):
        parses = [make() for make in makers]
        for i in range(n):
            part = lines[i * chunk:(i + 1) * chunk]
            for b, parse in zip(best, parses, strict=True):
                start = time.process_time()
                for text in part:
                    parse(text)
                b[i] = min(b[i], time.process_time() - start)
    return [sum(b) / len(lines) * 1e6 for b in best]


def load_before(root: Path) -> type[TimeFormat]:
    """``TimeFormat`` of the checkout at ``root``, imported as a package of another name
    (its ``processors/__init__`` is not run: only the two time modules are needed)."""
    pkg = types.ModuleType("before_processors")
    pkg.__path__ = [str(root / "processors")]
    sys.modules["before_processors"] = pkg
    cls: type[TimeFormat] = importlib.import_module("before_processors.timefmt").TimeFormat
    return cls


def _new_parser(fmt: str, cls: type[TimeFormat] = TimeFormat) -> Callable[[str], float]:
    return cls(fmt).parse


def _old_parser(fmt: str) -> Callable[[str], float]:
    return StrptimeFormat(fmt).parse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--old-lines", type=int, default=20_000,
                    help="lines for the strptime parser (it is slow; the rate is per line)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--spacing", choices=[*SPACINGS, "all"], default="all")
    ap.add_argument("--format", dest="only", default=None, help="one format name (substring)")
    ap.add_argument("--before", type=Path, default=None,
                    help="a checkout of an older revision: its TimeFormat in a column of its own")
    args = ap.parse_args()
    before = load_before(args.before) if args.before else None
    spacings = list(SPACINGS) if args.spacing == "all" else [args.spacing]
    print(f"# {platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
          f"{args.lines:,} lines (old: {args.old_lines:,}), each 5,000 best of {args.repeat}, "
          "CPU µs/line")
    print(f"{'format':26s} {'spacing':9s} {'old':>8s} "
          f"{'before' if before else '':>8s} {'new':>8s} {'speed-up':>9s}  fast")
    for name, (fmt, render) in FORMATS.items():
        if args.only and args.only not in name:
            continue
        for sp in spacings:
            lines = texts(render, SPACINGS[sp], args.lines, seed=1)
            new_tf = TimeFormat(fmt)
            for text in lines[:2000]:  # the same value as the reference, or the same error
                ok_new = ok_old = None
                try:
                    ok_new = new_tf.parse(text)
                except ValueError:
                    pass
                try:
                    ok_old = StrptimeFormat(fmt).parse(text)
                except ValueError:
                    pass
                if fmt.startswith("%s"):
                    continue  # strptime has no %s: nothing to compare with
                assert ok_new == ok_old, (fmt, text, ok_new, ok_old)
            makers: list[Callable[[], Callable[[str], float]]] = [partial(_new_parser, fmt)]
            if before is not None:
                makers.append(partial(_new_parser, fmt, before))
            new, *was = per_line(makers, lines, args.repeat)
            was_txt = f"{was[0]:8.3f}" if was else ""
            if fmt.startswith("%s"):
                old_txt = "n/a"
                ratio = ""
            else:
                old_lines = lines[:args.old_lines]
                old = per_line([partial(_old_parser, fmt)], old_lines, args.repeat)[0]
                old_txt, ratio = f"{old:8.2f}", f"{old / new:8.0f}x"
            print(f"{name:26s} {sp:9s} {old_txt:>8s} {was_txt:>8s} {new:8.3f} {ratio:>9s}  "
                  f"{'yes' if new_tf.fast else 'no'}", flush=True)


if __name__ == "__main__":
    main()
