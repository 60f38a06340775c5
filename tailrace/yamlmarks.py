"""YAML loading that remembers where every value came from, and ``${VAR}`` expansion.

:func:`load` returns the plain data plus a map from each value's path (a tuple of keys and
list indexes) to its 1-based line and column, so config errors can name ``FILE:LINE:COL``.
"""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from .errors import ConfigError, ConfigProblem

__all__ = ["Marks", "expand_env", "load", "path_str"]

Path = tuple[str | int, ...]
Marks = dict[Path, tuple[int, int]]

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def path_str(path: Path) -> str:
    """``("pipeline", "inputs", 0, "path")`` -> ``pipeline.inputs[0].path``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _walk(node: yaml.Node, path: Path, marks: Marks) -> None:
    marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            # A key's own position is where a "missing"/"unknown" error is best reported.
            marks[(*path, key, "<key>")] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            _walk(value_node, (*path, key), marks)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), marks)


def load(text: str, filename: str) -> tuple[Any, Marks]:
    """Parse YAML text; returns (data, marks).

    Raises:
        ConfigError: the text is not valid YAML (with the position of the syntax error).
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise ConfigError(
            [ConfigProblem(filename, line, col, "", f"invalid YAML: {exc.problem or exc}")]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(filename, 0, 0, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    marks: Marks = {}
    _walk(node, (), marks)
    return data, marks


def expand_env(
    data: Any, marks: Marks, filename: str, env: dict[str, str] | None = None
) -> tuple[Any, list[ConfigProblem]]:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string value.

    Returns the expanded data and a problem for each variable that is unset without a default.
    """
    environ = os.environ if env is None else env
    problems: list[ConfigProblem] = []

    def sub(value: str, path: Path) -> str:
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            line, col = marks.get(path, (0, 0))
            problems.append(
                ConfigProblem(
                    filename, line, col, path_str(path),
                    f"environment variable {name} is not set "
                    f"(set it, or write ${{{name}:-default}})",
                )
            )
            return m.group(0)

        return _ENV_RE.sub(repl, value)

    def walk(value: Any, path: Path) -> Any:
        if isinstance(value, str):
            return sub(value, path) if "${" in value else value
        if isinstance(value, dict):
            return {k: walk(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    return walk(data, ()), problems
