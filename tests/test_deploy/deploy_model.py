"""Reading the deployment files the way their tools do: Compose, Dockerfile, Kubernetes.

Docker cannot run on the development machines, so the tests read the files themselves:
Compose variable interpolation and override merging (the subset of the Compose
Specification our files use, implemented to the spec), volume strings, Dockerfile
instructions, ``.dockerignore`` matching, Kubernetes documents, and every command line
parsed by the real click CLI.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from tailrace.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
NODE_OVERRIDE = COMPOSE_DIR / "docker-compose.node.yml"
#: Local images for a machine without a registry (the podman test uses it).
LOCAL_OVERRIDE = COMPOSE_DIR / "docker-compose.local.yml"
COMPOSE_CONFIG = COMPOSE_DIR / "tailrace.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S_DIR = ROOT / "deploy" / "kubernetes"
COMPOSE_SCHEMA = Path(__file__).parent / "data" / "compose-spec.json"

#: The image's entry point ends in ``tailrace``: a service's command is tailrace's argv.
TAILRACE_IMAGE_PREFIX = "tailrace"


# ------------------------------------------------------------------------------------------
# Compose: interpolation, merging, volumes

_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A required variable (``${VAR:?message}``) is not set."""


def interpolate_text(text: str, env: dict[str, str]) -> str:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
    ``${VAR:?err}``, ``${VAR?err}``, ``${VAR:+alt}``, ``${VAR+alt}`` and ``$$``."""

    def repl(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if value is None or (op == ":?" and not value):
                raise InterpolationError(f"{name}: {arg or 'required variable is not set'}")
            return value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        return value or ""

    return _VAR.sub(repl, text)


def interpolate(data: Any, env: dict[str, str]) -> Any:
    """Interpolate every string value (not the keys) of a loaded Compose file."""
    if isinstance(data, str):
        return interpolate_text(data, env)
    if isinstance(data, dict):
        return {k: interpolate(v, env) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate(v, env) for v in data]
    return data


@dataclass(frozen=True)
class Mount:
    """One entry of a service's ``volumes``, short syntax."""

    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith((".", "/", "~"))


def parse_mount(spec: str) -> Mount:
    """``SOURCE:TARGET[:MODE]`` (named volume or bind mount) -> :class:`Mount`."""
    parts = spec.split(":")
    if len(parts) == 1:
        return Mount("", parts[0], False)
    mode = parts[2] if len(parts) > 2 else "rw"
    return Mount(parts[0], parts[1], "ro" in mode.split(","))


def _merge_sequence_by(key: Any, base: list[Any], override: list[Any]) -> list[Any]:
    merged = {key(item): item for item in base}
    for item in override:
        merged[key(item)] = item
    return list(merged.values())


def _env_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in value or []:
        name, _, val = str(item).partition("=")
        out[name] = val
    return out


#: Service keys whose override replaces the base value (Compose Specification, "Merge").
_REPLACED = {"command", "entrypoint", "healthcheck", "profiles", "image", "user"}


def merge_service(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge an override file's service into the base one, by the Compose merge rules."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "volumes":
            out[key] = _merge_sequence_by(lambda v: parse_mount(v).target,
                                          out.get(key, []), value)
        elif key == "ports":
            out[key] = list(dict.fromkeys([*out.get(key, []), *value]))
        elif key == "environment":
            out[key] = {**_env_dict(out.get(key)), **_env_dict(value)}
        elif key in _REPLACED or not isinstance(value, dict):
            out[key] = copy.deepcopy(value)
        else:
            out[key] = merge_mapping(out.get(key) or {}, value)
    return out


def merge_mapping(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_mapping(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_compose(*files: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Load Compose files as ``docker compose -f A -f B`` does: interpolate, then merge."""
    env = {} if env is None else env
    model: dict[str, Any] = {}
    for path in files:
        doc = interpolate(yaml.safe_load(path.read_text()), env)
        services = doc.pop("services", {})
        merged_services = dict(model.get("services", {}))
        for name, svc in services.items():
            merged_services[name] = (merge_service(merged_services[name], svc)
                                     if name in merged_services else svc)
        model = merge_mapping(model, doc)
        model["services"] = merged_services
    return model


def active_services(model: dict[str, Any], profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """The services ``docker compose up`` starts with these profiles enabled."""
    return {name: svc for name, svc in model["services"].items()
            if not svc.get("profiles") or set(svc["profiles"]) & set(profiles)}


def runs_tailrace(service: dict[str, Any]) -> bool:
    """True for services of the tailrace image (their command is tailrace's arguments)."""
    return str(service.get("image", "")).split("/")[-1].startswith(TAILRACE_IMAGE_PREFIX)


def replicas(service: dict[str, Any]) -> int:
    return int((service.get("deploy") or {}).get("replicas", 1))


def healthcheck_argv(test: str | list[str]) -> list[str]:
    """The command a compose health check runs: a string and ``CMD-SHELL`` go through
    ``/bin/sh -c`` (the words as sh splits them, for the simple commands we write)."""
    if isinstance(test, str):
        return shlex.split(test)
    kind, *rest = test
    if kind == "CMD-SHELL":
        (line,) = rest
        return shlex.split(line)
    assert kind == "CMD", f"health check {test!r} runs nothing"
    return list(rest)


# ------------------------------------------------------------------------------------------
# The CLI


@dataclass(frozen=True)
class Invocation:
    """A tailrace command line as click parsed it."""

    path: tuple[str, ...]  # ("sink",) or ("config", "check")
    params: dict[str, Any]


def parse_cli(args: list[str]) -> Invocation:
    """Parse ``args`` (what follows ``tailrace``) with the real click objects.

    Raises:
        click.UsageError: an unknown command or option, a missing required option, a bad
            value; exactly what ``tailrace`` would print before running anything.
    """
    command: click.Command = cli
    ctx = command.make_context("tailrace", list(args), resilient_parsing=False)
    path: list[str] = []
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # click 8.2 deprecates protected_args, 9 drops it
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = [*ctx.protected_args, *ctx.args]
        if not rest:
            raise click.UsageError("no command given", ctx)
        name, sub, sub_args = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        path.append(name)
        command = sub
        ctx = sub.make_context(name, sub_args, parent=ctx, resilient_parsing=False)
    return Invocation(tuple(path), dict(ctx.params))


# ------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to (-1: before the first FROM)

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ``CMD``/``ENTRYPOINT``/``HEALTHCHECK CMD``."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text[text.index(" CMD ") + 5:] if " CMD " in f" {text}" else ""
            text = text.strip()
            if text.startswith("CMD "):
                text = text[4:]
        text = text.strip()
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list)
        return [str(v) for v in value]

    def flags(self) -> dict[str, str]:
        """``--name=value`` flags at the start of the arguments."""
        out: dict[str, str] = {}
        for word in shlex.split(self.args):
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            out[name] = value
        return out


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions (comments dropped, continuations joined)."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    out: list[Instruction] = []
    stage = -1
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), stage))
    return out


def _segment_regex(segment: str) -> str:
    out = ""
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[" and "]" in segment[i + 1:]:
            end = segment.index("]", i + 1)
            out += segment[i:end + 1]
            i = end
        elif ch == "\\" and i + 1 < len(segment):
            i += 1
            out += re.escape(segment[i])
        else:
            out += re.escape(ch)
        i += 1
    return out


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    segments = pattern.strip("/").split("/")
    out = ""
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            out += ".*" if last else "(?:[^/]+/)*"
        else:
            out += _segment_regex(segment) + ("" if last else "/")
    return re.compile(f"^{out}(?:/.*)?$")


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Is ``path`` (relative to the context) left out of the build context?

    Docker's rules: patterns in order, the last match wins, ``!`` re-includes, ``**``
    matches any number of folders, and a pattern that matches a folder covers what is in it.
    """
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        if _ignore_regex(body).match(path):
            excluded = not negate
    return excluded


def dockerignore_patterns(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


# ------------------------------------------------------------------------------------------
# Kubernetes


def k8s_documents() -> list[dict[str, Any]]:
    """Every object of the manifests that ``kubectl apply -k deploy/kubernetes`` applies."""
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S_DIR / name).read_text()):
            if doc:
                doc["__file__"] = name
                docs.append(doc)
    return docs


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``Kind/name`` -> pod template spec, for every workload."""
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
            for d in docs if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")}


# ------------------------------------------------------------------------------------------
# Sizes, each in its tool's units

_UNIT = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def k8s_quantity(text: str) -> int:
    """A Kubernetes memory quantity: ``Ki``/``Mi``/``Gi`` binary, ``k``/``M``/``G`` decimal."""
    m = re.fullmatch(r"(\d+)([kKMGT]?)(i?)", str(text))
    assert m, f"not a Kubernetes quantity: {text}"
    return int(m.group(1)) * (1024 if m.group(3) else 1000) ** _UNIT[m.group(2).lower()]


def redis_size(text: str) -> int:
    """A redis.conf size: ``1k`` = 1000, ``1kb`` = 1024 (and so on for m, g)."""
    m = re.fullmatch(r"(\d+)([kmg]?)(b?)", str(text).lower())
    assert m, f"not a Redis size: {text}"
    return int(m.group(1)) * (1024 if m.group(3) else 1000) ** _UNIT[m.group(2)]


def docker_size(text: str) -> int:
    """A Docker/Compose or JVM size (``768M``, ``2G``, ``1g``): binary units."""
    m = re.fullmatch(r"(\d+)([kKmMgG]?)[bB]?", str(text))
    assert m, f"not a Docker size: {text}"
    return int(m.group(1)) * 1024 ** _UNIT[m.group(2).lower()]
