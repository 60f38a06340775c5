"""The lazy-loop rewrite gives re's results exactly, and only where it can prove them."""

from __future__ import annotations

import random
import re
import sys

import pytest

from processors.parsers.regex import translate_onigmo
from processors.regex_rewrite import compile_regex, optional_groups, rewrite_count
from processors.stock import STOCK_PARSERS

#: The rewrite and the group analysis run on CPython 3.11 only (processors/regex_rewrite.py).
on_311 = pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason=(
    "the lazy-loop rewrite is enabled on CPython 3.11 only, where its parse-tree shapes are "
    "checked; elsewhere patterns compile as written (the comparisons still run)"))

NGINX = next(p["regex"] for p in STOCK_PARSERS if p["name"] == "nginx")

LINES = [
    '55.19.44.112 - - [30/Nov/2025:10:53:21 +0000] "GET /api/v3/users/7122251/events HTTP/1.1" '
    '200 41328 "-" "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"',
    '2001:db8::4a23 - - [30/Nov/2025:10:53:21 +0000] "GET /a b  c HTTP/1.1" 500 11 "-" "x"',
    '1.2.3.4 - - [30/Nov/2025:10:53:21 +0000] "GET /a  HTTP/1.1 x" 200 1',
    '1.2.3.4 - - [30/Nov/2025:10:53:21 +0000] "GET" 200 1',
    '1.2.3.4 - - [30/Nov/2025:10:53:21 +0000] "GET  " 200 1 "r" "a"',
    '1.2.3.4 - - [30/Nov/2025:10:53:21 +0000] "GET /x"y HTTP/1.1" 200 1',
    '1.2.3.4 - - [30/Nov/2025:10:53:21 +0000] "\\x16\\x03\\x01" 400 0 "-" "-"',
    '2025/11/30 10:53:21 [error] 17#17: *1 open() failed (2: No such file or directory)',
]


def same(a: re.Pattern[str], b: re.Pattern[str], text: str) -> None:
    for call in ("search", "match", "fullmatch"):
        ma, mb = getattr(a, call)(text), getattr(b, call)(text)
        assert (ma is None) == (mb is None), (a.pattern, text, call)
        if ma is not None and mb is not None:
            assert ma.regs == mb.regs, (a.pattern, text, call)
            assert ma.lastindex == mb.lastindex, (a.pattern, text, call)
    assert a.findall(text) == b.findall(text), (a.pattern, text)


@pytest.mark.parametrize("name", [p["name"] for p in STOCK_PARSERS if p["format"] == "regex"])
def test_stock_patterns_give_the_same_groups(name: str) -> None:
    pattern = translate_onigmo(next(p["regex"] for p in STOCK_PARSERS if p["name"] == name))
    plain, fast = re.compile(pattern), compile_regex(pattern)
    assert (fast.pattern, fast.flags, fast.groups, fast.groupindex) == (
        plain.pattern, plain.flags, plain.groups, plain.groupindex)
    for line in LINES:
        same(plain, fast, line)


@on_311
def test_the_nginx_path_loop_is_rewritten() -> None:
    assert rewrite_count(translate_onigmo(NGINX)) == 1


@pytest.mark.parametrize("pattern", [
    r"(?i)a(.*?)(?:b|c)",       # case-insensitive: classes are compiled differently
    r"a(?i:(.*?))(?:b|c)",      # local flags
    r"a(?=(.*?)(?:b|c))",       # inside a lookahead (atomic once it matched)
    r"a(?>(.*?)(?:b|c))",       # inside an atomic group
    r"a(?:[^x]*?)++(?:b|c)",    # inside a possessive loop
    r"a.*?b",                   # a literal follows: re's fast path already
    r"a(.*?)(?:b|\w)",          # what follows is no small set
    r"a(.*?)(?:b|)",            # what follows may be empty, then the end
    r"a(.*?)(?=b)c",            # an assertion follows
    r"a(.*?)\1",                # a backreference follows
    r"a([ab]*?)(?:a|b)",        # every character of the loop may end it: nothing to skip
])
def test_what_cannot_be_proven_is_left_alone(pattern: str) -> None:
    assert rewrite_count(pattern) == 0


@on_311
@pytest.mark.parametrize("pattern", [
    r"a(.*?)b",                 # the group's end comes first: re has no fast path there
    r"a(.*?)(?:b|c)",
    r"a([^x]+?)(?: +y)?z",
    r"(?:k(.*?)(?:;|,))+$",
    r"(?:(.*?)|q)(?:b|c)",
    r"(?s)a(.*?)(?:b|c)",
    r"a(.*?)$",                 # $: the end, or before a newline
    r"(?m)a([^x]*?)(?:;|$)",
    r"a([^x]*?)\Z",             # \Z: only the end (the loop becomes one possessive run)
])
def test_provable_loops_are_rewritten(pattern: str) -> None:
    assert rewrite_count(pattern) == 1


# -- random patterns against random texts ----------------------------------------------

ALPHABET = 'ab "x\n'
ATOMS = ["a", "b", " ", '"', "x", "[ab]", "[^ ]", '[^"]', "[^\"\\n]", r"\S", r"\s", ".", "[a-c]"]


def random_pattern(rng: random.Random, depth: int = 0) -> str:
    parts = []
    for _ in range(rng.randint(1, 4)):
        k = rng.random()
        if depth < 3 and k < 0.25:
            inner = random_pattern(rng, depth + 1)
            kind = rng.choice(["(%s)", "(?:%s)", "(?:%s)?", "(?:%s)*", "(?:%s)+?",
                               "(?:%s|%s)" % ("%s", random_pattern(rng, depth + 1)),
                               "(?=%s)", "(?>%s)"])
            parts.append(kind % inner)
        elif k < 0.55:
            parts.append(rng.choice(ATOMS) + rng.choice(["*?", "+?", "*?", "+?", "??"]))
        elif k < 0.65:
            parts.append(rng.choice(ATOMS) + rng.choice(["*", "+", "?", "{1,2}"]))
        elif k < 0.7:
            parts.append(rng.choice(["$", "^", r"\b"]))
        else:
            parts.append(rng.choice(ATOMS))
    return "".join(parts)


FOLLOWS = ["(?: +x)?\"", "(?:b|c)", "(?:\"|$)", "$", "\\Z", "(?: |$)", "(?: [^ ]*)?b",
           "(?:a|\n)+", "(?:ab)*\"", "( *)\"", "(?:\"|b|)x", "[ab]"]


def targeted_pattern(rng: random.Random) -> str:
    """A lazy loop in a group, then what the rewrite can (or cannot) see past."""
    loop = rng.choice(ATOMS) + rng.choice(["*?", "+?"])
    group = rng.choice(["(%s)", "(?:%s)", "(?:(%s)|q)", "(?:k(%s))?"]) % loop
    return random_pattern(rng, 2) + group + rng.choice(FOLLOWS) + rng.choice(["", "$", "a"])


@pytest.mark.parametrize("seed", range(8))
def test_random_patterns_match_as_re_does(seed: int) -> None:
    rng = random.Random(seed)
    rewritten = 0
    for _ in range(400):
        pattern = random_pattern(rng) if rng.random() < 0.5 else targeted_pattern(rng)
        flags = rng.choice([0, 0, re.DOTALL, re.MULTILINE])
        try:
            plain = re.compile(pattern, flags)
        except re.error:
            continue
        fast = compile_regex(pattern, flags)
        rewritten += rewrite_count(pattern, flags) > 0
        for _ in range(30):
            text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 14)))
            same(plain, fast, text)
    if sys.version_info[:2] == (3, 11):  # elsewhere nothing is rewritten (see on_311)
        assert rewritten > 60  # the comparison covered the rewrite, not only plain patterns


@on_311
@pytest.mark.parametrize("seed", range(4))
def test_groups_outside_optional_parts_are_set_in_every_match(seed: int) -> None:
    rng = random.Random(seed)
    seen_optional = seen_set = 0
    for _ in range(400):
        pattern = random_pattern(rng) if rng.random() < 0.5 else targeted_pattern(rng)
        try:
            rx = re.compile(pattern)
        except re.error:
            continue
        optional = optional_groups(rx)
        for _ in range(30):
            text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 14)))
            m = rx.search(text)
            if m is None:
                continue
            for i in range(1, rx.groups + 1):
                if i in optional:
                    seen_optional += 1
                else:
                    seen_set += 1
                    assert m.group(i) is not None, (pattern, text, i)
    assert seen_optional > 100 and seen_set > 100


@on_311
def test_the_nginx_optional_groups_are_path_referer_and_agent() -> None:
    rx = re.compile(translate_onigmo(NGINX))
    assert sorted(optional_groups(rx)) == sorted(
        rx.groupindex[k] for k in ("path", "referer", "agent"))
