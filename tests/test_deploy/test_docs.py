"""The docs cannot drift: their commands run against the real CLI and manifests.

Every shell line of every Markdown page (README, docs/, compose/, examples/) is split into
commands; each ``tailrace ...`` is parsed by the click CLI, and every ``tailrace <command>``
quoted in the text names a command that exists. In compose/README.md, docs/kubernetes.md
and docs/migration-fluent-bit.md each ``docker compose`` names services, profiles and files
that exist, each ``kubectl`` names workloads of the manifests. The migration page's worked
example must pass ``tailrace config check``, and ``tailrace parse`` must print what the page shows.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from deploy_model import (
    COMPOSE_FILE,
    NODE_OVERRIDE,
    ROOT,
    k8s_documents,
    load_compose,
    parse_cli,
)

from tailrace.cli.main import cli

DOCS = [ROOT / "compose" / "README.md", ROOT / "docs" / "kubernetes.md",
        ROOT / "docs" / "migration-fluent-bit.md"]
MIGRATION = ROOT / "docs" / "migration-fluent-bit.md"
#: Every page a user reads, for the ``tailrace`` commands they show.
PAGES = sorted({ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("compose/*.md"),
                *ROOT.glob("examples/**/*.md")})
_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&", "(", ")", "$("}


def shell_lines(path: Path) -> list[str]:
    """Lines of the ``sh`` code blocks, continuations joined."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", path.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def simple_commands(line: str) -> list[list[str]]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in _OPERATORS or set(token) <= set("|&;<>()"):
            commands.append([])
        else:
            commands[-1].append(token)
    out = []
    for cmd in commands:
        while cmd and re.match(r"^[A-Z_][A-Z0-9_]*=", cmd[0]):
            cmd = cmd[1:]
        if cmd:
            out.append(cmd)
    return out


def tailrace_args(cmd: list[str]) -> list[str] | None:
    """What follows the ``tailrace`` program in a command, if it runs tailrace."""
    for i, token in enumerate(cmd):
        if Path(token).name == "tailrace" and (i == 0 or cmd[i - 1] not in (
                "-n", "--namespace", "-p", "--project-name")):
            return cmd[i + 1:]
    return None


def all_commands(pages: list[Path] = DOCS) -> list[tuple[str, list[str]]]:
    return [(f"{path.relative_to(ROOT)}: {line}", cmd) for path in pages
            for line in shell_lines(path) for cmd in simple_commands(line)]


_TAILRACE = [(w, c) for w, c in all_commands(PAGES) if tailrace_args(c) is not None]


def test_docs_have_commands_to_check() -> None:
    found = [c for _, c in all_commands() if tailrace_args(c) is not None]
    assert len(found) >= 10
    assert len(_TAILRACE) > len(found), "the other pages' commands are checked too"


@pytest.mark.parametrize(("where", "cmd"), _TAILRACE, ids=[w for w, _ in _TAILRACE])
def test_tailrace_commands_in_the_docs_are_accepted_by_the_cli(where: str, cmd: list[str]
                                                               ) -> None:
    args = tailrace_args(cmd)
    assert args is not None
    try:
        parse_cli(args)
    except click.UsageError as exc:
        pytest.fail(f"{where}\n  tailrace {shlex.join(args)}: {exc.format_message()}")


def _quoted_commands() -> list[tuple[str, list[str]]]:
    """``tailrace <command> [<sub>]`` quoted in the text of every page."""
    found = []
    for path in PAGES:
        for m in re.finditer(r"`tailrace ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", path.read_text()):
            found.append((f"{path.relative_to(ROOT)}: {m.group(0)}`",
                          [w for w in m.groups() if w]))
    return found


def test_every_command_the_text_names_exists() -> None:
    """A command that vanished from the CLI fails here, wherever the docs still name it."""
    ctx = click.Context(cli)
    missing = []
    for where, words in _quoted_commands():
        command = cli.get_command(ctx, words[0])  # type: ignore[attr-defined]
        if command is None:
            missing.append(where)
        elif len(words) > 1 and isinstance(command, click.Group) and (
                command.get_command(ctx, words[1]) is None):
            missing.append(where)
    assert len(_quoted_commands()) >= 20
    assert not missing, "\n".join(missing)


def _compose_args(cmd: list[str]) -> list[str] | None:
    if cmd[:2] == ["docker", "compose"]:
        return cmd[2:]
    if cmd[:1] == ["podman-compose"]:  # the podman section: the same file, the same names
        return cmd[1:]
    return None


def test_docker_compose_commands_name_real_services_files_and_profiles() -> None:
    model = load_compose(COMPOSE_FILE)
    services = set(model["services"])
    profiles = {p for s in model["services"].values() for p in s.get("profiles", [])}
    checked = 0
    for where, cmd in all_commands():
        args = _compose_args(cmd)
        if args is None:
            continue
        checked += 1
        i = 0
        while i < len(args) and args[i].startswith("-"):
            if args[i] == "-f":
                assert (ROOT / args[i + 1]).is_file(), where
            if args[i] == "--profile":
                assert args[i + 1] in profiles, where
            i += 2 if args[i] in ("-f", "--profile", "-p") else 1
        sub, rest = args[i], args[i + 1:]
        names: list[str] = []
        if sub in ("exec", "run"):
            names = [next(a for a in rest if not a.startswith("-"))]
        elif sub in ("logs", "restart", "stop", "start"):
            names = [a for a in rest if not a.startswith("-")]
        elif sub == "up":
            names = [a.split("=")[0] for j, a in enumerate(rest) if j and rest[j - 1] == "--scale"]
            names += [a for j, a in enumerate(rest)
                      if not a.startswith("-") and rest[j - 1] != "--scale"]
        for name in names:
            assert name in services, f"{where}: no service {name!r}"
    assert checked >= 8


def test_node_override_command_in_the_readme_works() -> None:
    line = next(ln for ln in shell_lines(ROOT / "compose" / "README.md")
                if NODE_OVERRIDE.name in ln)
    env = dict(re.findall(r"\b([A-Z_]+)=(\S+)", line.split("docker", 1)[0]))
    assert "TAILRACE_AGENT_ID" in env
    load_compose(COMPOSE_FILE, NODE_OVERRIDE, env={"TAILRACE_AGENT_ID": "node-1"})


def test_kubectl_commands_name_real_objects() -> None:
    docs = k8s_documents()
    kinds = {"deploy": "Deployment", "deployment": "Deployment", "daemonset": "DaemonSet",
             "ds": "DaemonSet", "statefulset": "StatefulSet", "sts": "StatefulSet"}
    objects = {(d["kind"], d["metadata"]["name"]) for d in docs}
    namespace = next(d["metadata"]["name"] for d in docs if d["kind"] == "Namespace")
    claims = {f"{t['metadata']['name']}-{d['metadata']['name']}-0" for d in docs
              if d["kind"] == "StatefulSet" for t in d["spec"]["volumeClaimTemplates"]}
    checked = 0
    for where, cmd in all_commands():
        if not cmd or cmd[0] != "kubectl":
            continue
        checked += 1
        end = cmd.index("--") if "--" in cmd else len(cmd)
        own = cmd[:end]
        for j, token in enumerate(own):
            if token in ("-n", "--namespace"):
                assert own[j + 1] == namespace, where
            if token == "-k":
                assert (ROOT / own[j + 1] / "kustomization.yaml").is_file(), where
            kind, _, name = token.partition("/")
            if name and kind in kinds and own[j - 1] not in ("-k", "-f"):
                assert (kinds[kind], name) in objects, f"{where}: no {kind}/{name}"
        if "pvc" in own:
            assert own[own.index("pvc") + 1] in claims, where
    assert checked >= 8


# -- the migration page's worked example ---------------------------------------------------


def _block(kind: str) -> str:
    blocks = re.findall(rf"```{kind}\n(.*?)```", MIGRATION.read_text(), re.S)
    assert len(blocks) == 1, f"expected one ```{kind} block"
    return str(blocks[0])


def _plugins(doc: dict[str, Any]) -> dict[str, list[str]]:
    pipeline = doc.get("pipeline") or {}
    return {s: [p["name"] for p in pipeline.get(s) or []]
            for s in ("inputs", "filters", "outputs")}


def test_migration_example_translates_every_fluent_bit_plugin() -> None:
    fluent = yaml.safe_load(_block("yaml fluent-bit"))
    ours = yaml.safe_load(_block("yaml tailrace"))
    assert _plugins(fluent) == _plugins(ours)
    assert [p["name"] for p in fluent["parsers"]] == [p["name"] for p in ours["parsers"]]


def test_migration_example_passes_config_check(tmp_path: Path) -> None:
    config = tmp_path / "tailrace.yaml"
    config.write_text(_block("yaml tailrace"))
    result = CliRunner().invoke(cli, ["config", "check", "-q", "-c", str(config)])
    assert result.exit_code == 0, result.output


def test_migration_example_parses_the_line_the_page_shows(tmp_path: Path) -> None:
    config = tmp_path / "tailrace.yaml"
    config.write_text(_block("yaml tailrace"))
    line = next(ln for ln in shell_lines(MIGRATION) if ln.startswith("echo "))
    text = simple_commands(line)[0][1]
    result = CliRunner().invoke(cli, ["parse", "-c", str(config), "--parser", "nginx"],
                                input=text + "\n")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == _block("json parse-output").strip()
