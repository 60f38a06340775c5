"""The ``modify`` filter: Fluent Bit's rules (set, add, remove, rename, copy, ...) under
conditions.

Rules are given per operation (``set: {cluster: prod}``, ``rename: ['Key2 RenamedKey']``,
a map or ``"KEY VALUE"`` strings) and apply in the order the operations appear in the
config, each operation's entries in order; or as one ordered ``rules:`` list
(``- Set KEY VALUE`` / ``- {copy: [A, B]}``) when operations must interleave. Each rule
works on the result of the previous one. Conditions (``condition:``, Fluent Bit's names,
``"Key_value_equals KEY VALUE"``) must all hold for a record's rules to apply. ``KEY`` may
be a record accessor (``$kubernetes['pod']``); wildcards and regexes apply to top-level keys.
``_id`` and ``_tag`` cannot be changed; wildcard and regex rules also skip ``time``.
The resolved options hold everything in ``rules`` (the per-operation keys are folded into
it and not dumped), so dumping and validating them again gives the same filter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import repeat
from typing import Any, ClassVar

from pydantic import Field, model_validator

from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult
from tailrace.plugins import FilterPlugin, Record

from ..context import FilterContext
from ._fluent import fold_keys
from ._modify_rules import CONDITIONS, OPERATIONS, compile_condition, compile_rule, parse_items

__all__ = ["ModifyFilter", "ModifyOptions"]


class ModifyOptions(FilterOptions):
    set: list[tuple[str, Any]] = Field(
        default_factory=list, exclude=True,
        description="Set KEY to VALUE (`KEY VALUE`), replacing it."
    )
    add: list[tuple[str, Any]] = Field(
        default_factory=list, exclude=True,
        description="Set KEY to VALUE when KEY is absent."
    )
    remove: list[str] = Field(default_factory=list, exclude=True, description="Remove these keys.")
    remove_wildcard: list[str] = Field(
        default_factory=list, exclude=True,
        description="Remove keys matching these wildcards (`Mem.*`)."
    )
    remove_regex: list[str] = Field(
        default_factory=list, exclude=True,
        description="Remove keys matching these regular expressions."
    )
    rename: list[tuple[str, str]] = Field(
        default_factory=list, exclude=True,
        description="Rename KEY to NEW (`KEY NEW`) when NEW is absent."
    )
    hard_rename: list[tuple[str, str]] = Field(
        default_factory=list, exclude=True,
        description="Rename KEY to NEW, replacing NEW."
    )
    copy_: list[tuple[str, str]] = Field(
        default_factory=list, exclude=True,
        alias="copy", description="Copy KEY to NEW when NEW is absent."
    )
    hard_copy: list[tuple[str, str]] = Field(
        default_factory=list, exclude=True,
        description="Copy KEY to NEW, replacing NEW."
    )
    move_to_start: list[str] = Field(
        default_factory=list, exclude=True,
        description="Move keys matching these wildcards to the start."
    )
    move_to_end: list[str] = Field(
        default_factory=list, exclude=True,
        description="Move keys matching these wildcards to the end."
    )
    rules: list[tuple[str, tuple[Any, ...]]] = Field(
        default_factory=list,
        description="Every rule in one ordered list: `Set KEY VALUE` strings or "
        "`{copy: [A, B]}` maps. The per-operation keys above are folded into it, in the "
        "order they appear.",
    )
    condition: list[tuple[str, tuple[str, ...]]] = Field(
        default_factory=list,
        description="Conditions that must all hold: `Key_exists KEY`, `Key_value_equals KEY "
        "VALUE`, `Key_value_matches KEY REGEX`, `A_key_matches REGEX`, ... (Fluent Bit's).",
    )

    @model_validator(mode="before")
    @classmethod
    def _ordered(cls, data: Any) -> Any:
        data = fold_keys(cls, data)
        if not isinstance(data, dict):
            return data
        data = dict(data)
        ordered: list[tuple[str, tuple[Any, ...]]] = []
        for key, value in data.items():
            op = "copy" if key == "copy_" else key
            if op in OPERATIONS:
                ordered.extend((op, args) for args in parse_items(op, value))
            elif op == "rules":
                for item in value if isinstance(value, list) else [value]:
                    ordered.extend(_rule_item(item))
        if "condition" in data:
            conds = data["condition"]
            data["condition"] = [_condition_item(c) for c in
                                 (conds if isinstance(conds, list) else [conds])]
        for op, args in ordered:
            compile_rule(op, args)  # raises ValueError with the expected form
        for name, args in data.get("condition", []):
            compile_condition(name, args)
        data["rules"] = ordered
        for key in [k for k in data if k in OPERATIONS or k == "copy_"]:
            op = "copy" if key == "copy_" else key
            data[key] = [a[0] if len(a) == 1 else a for a in parse_items(op, data[key])]
        return data


def _rule_item(item: Any) -> list[tuple[str, tuple[Any, ...]]]:
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], (list, tuple)):
        return [(str(item[0]).lower(), tuple(item[1]))]  # already normalised
    if isinstance(item, str):
        op, _, rest = item.strip().partition(" ")
        op = op.lower()
        if op not in OPERATIONS:
            raise ValueError(f"unknown modify rule {op!r}; expected one of: "
                             f"{', '.join(OPERATIONS)}")
        return [(op, args) for args in parse_items(op, rest)]
    if isinstance(item, dict):
        out: list[tuple[str, tuple[Any, ...]]] = []
        for op, value in item.items():
            op = str(op).lower()
            if op not in OPERATIONS:
                raise ValueError(f"unknown modify rule {op!r}; expected one of: "
                                 f"{', '.join(OPERATIONS)}")
            if isinstance(value, list) and OPERATIONS[op] == 2 and len(value) == 2 and \
                    not any(isinstance(v, (list, dict)) for v in value):
                value = {value[0]: value[1]}
            out.extend((op, args) for args in parse_items(op, value))
        return out
    raise ValueError(f"expected a rule like 'Set KEY VALUE' or {{set: [KEY, VALUE]}}, got {item!r}")


def _condition_item(item: Any) -> tuple[str, tuple[str, ...]]:
    if isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], (list, tuple)):
        return str(item[0]).lower(), tuple(str(a) for a in item[1])
    if isinstance(item, str):
        words = item.strip().split(None, 2)
        name, args = (words[0].lower(), tuple(words[1:])) if words else ("", ())
    elif isinstance(item, dict) and len(item) == 1:
        [(name, value)] = item.items()
        name = str(name).lower()
        args = tuple(str(v) for v in value) if isinstance(value, list) else (
            tuple(str(value).split(None, 1)))
    else:
        raise ValueError(f"expected a condition like 'Key_exists KEY', got {item!r}")
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; expected one of: "
                         f"{', '.join(CONDITIONS)}")
    return name, args


class ModifyFilter(FilterPlugin):
    name: ClassVar[str] = "modify"
    description: ClassVar[str] = "Set, add, rename, copy and remove record keys, under conditions."
    Options: ClassVar[type[ModifyOptions]] = ModifyOptions

    def __init__(self, options: ModifyOptions, ctx: FilterContext) -> None:
        self.counters = ctx.counters
        self.conditions: list[Callable[[Record], bool]] = [
            compile_condition(n, a, ctx.counters) for n, a in options.condition]
        self.rules: list[Callable[[Record], None]] = [
            compile_rule(op, args, ctx.counters) for op, args in options.rules]
        # Only top-level `set` and `remove` rules, no condition (the common case): a plan of
        # dict.update / pop steps run in one loop, without a call per rule.
        self._plan: list[tuple[bool, Any]] | None = None
        if not self.conditions and all(op in ("set", "remove") and not str(args[0]).startswith(
                "$") for op, args in options.rules):
            plan: list[tuple[bool, Any]] = []
            for op, args in options.rules:
                if op == "set":
                    if plan and plan[-1][0]:
                        plan[-1][1][str(args[0])] = args[1]
                    else:
                        plan.append((True, {str(args[0]): args[1]}))
                else:
                    plan.append((False, str(args[0])))
            self._plan = plan

    def process(self, records: list[Record]) -> FilterResult:
        plan = self._plan
        if plan is not None:
            # One pass per step, at C speed (map over dict methods; deque drains it). Each
            # key's last write is the same as record by record, so the result is too.
            for is_set, arg in plan:
                if is_set:
                    deque(map(dict.update, records, repeat(arg)), maxlen=0)
                else:
                    deque(map(dict.pop, records, repeat(arg), repeat(None)), maxlen=0)
            return FilterResult(records)
        conditions, rules = self.conditions, self.rules
        for r in records:
            if conditions and not all(c(r) for c in conditions):
                continue
            for rule in rules:
                rule(r)
        return FilterResult(records)
