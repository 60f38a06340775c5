"""The compose stack, checked without Docker: schema, commands, config, volumes, health.

Each test reads compose/docker-compose.yml the way ``docker compose`` does (interpolation,
merge keys, override files) and checks it against what it runs: the Compose
Specification's JSON schema, tailrace's real click CLI, and tailrace's config loader.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from deploy_model import (
    COMPOSE_CONFIG,
    COMPOSE_DIR,
    COMPOSE_FILE,
    COMPOSE_SCHEMA,
    LOCAL_OVERRIDE,
    NODE_OVERRIDE,
    InterpolationError,
    Mount,
    active_services,
    docker_size,
    healthcheck_argv,
    interpolate_text,
    load_compose,
    parse_cli,
    parse_mount,
    redis_size,
    replicas,
    runs_tailrace,
)
from jsonschema import Draft7Validator

from tailrace.cli.main import cli
from tailrace.cli.registry import build_registry
from tailrace.config import Config, load_config

NODE_ENV = {"TAILRACE_AGENT_ID": "node-1"}
#: Services the issue asks for, by role.
EXPECTED_SERVICES = {"redis", "elasticsearch", "kibana", "generator", "agent", "processor",
                     "sink-es", "sink-file"}
#: Commands that run without a config file.
NO_CONFIG_COMMANDS = {("generate",)}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE_FILE)


@pytest.fixture(scope="module")
def node_compose() -> dict[str, Any]:
    return load_compose(COMPOSE_FILE, NODE_OVERRIDE, env=NODE_ENV)


def tailrace_services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in model["services"].items() if runs_tailrace(s)}


def mounts(service: dict[str, Any]) -> list[Mount]:
    return [parse_mount(v) for v in service.get("volumes", [])]


def config_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {str(k): str(v) for k, v in env.items()}


def load_for_service(service: dict[str, Any]) -> Config:
    """The mounted config as this service's process loads it (its environment applied)."""
    return load_config(COMPOSE_CONFIG, build_registry(), env=config_env(service))


# -- the file itself ---------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]
                                                                  ) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft7Validator(schema).iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_node_override_merged_is_valid_against_the_compose_specification(
        node_compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft7Validator(schema).iter_errors(node_compose)]
    assert not errors, "\n".join(errors)


def test_local_images_override_merged_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    merged = load_compose(COMPOSE_FILE, LOCAL_OVERRIDE)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in Draft7Validator(schema).iter_errors(merged)]
    assert not errors, "\n".join(errors)


def test_users_run_the_official_images_and_the_local_override_only_swaps_redis_image(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["redis"]["image"].startswith("redis:")
    assert services["elasticsearch"]["image"].startswith(
        "docker.elastic.co/elasticsearch/elasticsearch:")
    override = yaml.safe_load(LOCAL_OVERRIDE.read_text())["services"]
    assert set(override) == {"redis"}
    assert set(override["redis"]) == {"image", "entrypoint", "working_dir"}, \
        "the local Redis must run the main file's command (podman-compose 1.0.3 would " \
        "append a second command to the first, not replace it)"
    merged = load_compose(COMPOSE_FILE, LOCAL_OVERRIDE)["services"]["redis"]
    assert merged["command"] == services["redis"]["command"]
    assert merged["working_dir"] == next(m.target for m in mounts(merged)
                                         if m.source == "redis-data")


def test_local_redis_entrypoint_runs_the_command_with_protected_mode_off() -> None:
    entry = load_compose(COMPOSE_FILE, LOCAL_OVERRIDE)["services"]["redis"]["entrypoint"]
    out = subprocess.run([*entry, "echo", "redis-server", "--appendonly", "yes"],
                         capture_output=True, text=True, timeout=10)
    assert out.stdout.split() == ["redis-server", "--appendonly", "yes", "--protected-mode",
                                  "no"]


def test_schema_check_catches_a_misspelt_key(compose: dict[str, Any]) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["agent"]["depends_onn"] = broken["services"]["agent"].pop("depends_on")
    assert list(Draft7Validator(schema).iter_errors(broken))


def test_stack_has_every_service_the_issue_names(compose: dict[str, Any]) -> None:
    assert EXPECTED_SERVICES <= set(compose["services"])
    assert compose["services"]["kibana"]["profiles"] == ["kibana"]
    started = set(active_services(compose))
    assert "kibana" not in started and EXPECTED_SERVICES - {"kibana"} <= started


def test_required_variable_of_node_override_is_enforced() -> None:
    with pytest.raises(InterpolationError, match="TAILRACE_AGENT_ID"):
        load_compose(COMPOSE_FILE, NODE_OVERRIDE, env={})


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate_text("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $$SET $SET", env) == \
        "x d  d $SET x"
    assert interpolate_text("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}", env) == "alt||alt"


# -- commands against the real CLI --------------------------------------------------------


@pytest.mark.parametrize("name", sorted(tailrace_services(load_compose(COMPOSE_FILE))))
def test_service_command_is_accepted_by_the_cli(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    try:
        inv = parse_cli(list(service["command"]))
    except click.UsageError as exc:
        pytest.fail(f"service {name}: `tailrace {shlex.join(service['command'])}` is rejected "
                    f"by the CLI: {exc.format_message()}")
    if inv.path in NO_CONFIG_COMMANDS:
        return
    config_target = inv.params["config_path"]
    assert config_target in {m.target for m in mounts(service)}, \
        f"service {name} reads {config_target}, which it does not mount"
    output = inv.params.get("output")
    if output is not None:
        config = load_for_service(service)
        ids = [o.id for o in config.outputs]
        assert output in ids, f"service {name}: --output {output} is none of {ids}"


def test_one_config_is_mounted_read_only_into_every_tailrace_service(
        compose: dict[str, Any]) -> None:
    sources = set()
    for name, service in tailrace_services(compose).items():
        inv = parse_cli(list(service["command"]))
        if inv.path in NO_CONFIG_COMMANDS:
            continue
        mount = next(m for m in mounts(service) if m.target == inv.params["config_path"])
        assert mount.read_only, f"{name} mounts the config writable"
        sources.add((COMPOSE_DIR / mount.source).resolve())
    assert sources == {COMPOSE_CONFIG.resolve()}


def test_each_output_of_the_config_has_a_sink_service(compose: dict[str, Any]) -> None:
    config = load_config(COMPOSE_CONFIG, build_registry())
    served = {parse_cli(list(s["command"])).params.get("output")
              for s in tailrace_services(compose).values()
              if parse_cli(list(s["command"])).path == ("sink",)}
    assert served == {o.id for o in config.outputs}


def test_mounted_config_passes_config_check() -> None:
    result = CliRunner().invoke(cli, ["config", "check", "-q", "-c", str(COMPOSE_CONFIG)])
    assert result.exit_code == 0, result.output


def test_mounted_config_passes_config_check_on_a_real_node(node_compose: dict[str, Any]
                                                           ) -> None:
    config = load_for_service(node_compose["services"]["agent"])
    assert config.inputs[0].options.path == ["/var/log/containers/*.log"]
    assert config.service.agent_name == NODE_ENV["TAILRACE_AGENT_ID"]


# -- volumes and paths --------------------------------------------------------------------


def test_named_volumes_are_declared_and_each_path_has_one_source(compose: dict[str, Any]
                                                                 ) -> None:
    declared = set(compose.get("volumes") or {})
    by_target: dict[str, set[str]] = {}
    for name, service in compose["services"].items():
        for m in mounts(service):
            if not m.is_bind:
                assert m.source in declared, f"{name} mounts undeclared volume {m.source}"
            by_target.setdefault(m.target, set()).add(m.source)
    conflicting = {t: s for t, s in by_target.items() if len(s) > 1}
    assert not conflicting, f"one path, several sources: {conflicting}"
    used = {m.source for s in compose["services"].values() for m in mounts(s) if not m.is_bind}
    assert declared == used, f"declared but unused: {declared - used}"


def _under(path: str, mount_target: str) -> bool:
    return path == mount_target or path.startswith(mount_target.rstrip("/") + "/")


def test_generator_writes_where_the_agent_reads(compose: dict[str, Any]) -> None:
    services = compose["services"]
    gen = parse_cli(list(services["generator"]["command"]))
    assert gen.params["fmt"] == "cri"
    gen_mount = next(m for m in mounts(services["generator"])
                     if _under(gen.params["directory"], m.target))
    assert not gen_mount.read_only
    config = load_for_service(services["agent"])
    (tail,) = [i for i in config.inputs if i.name == "tail"]
    assert tail.options.format == gen.params["fmt"]
    for pattern in tail.options.path:
        agent_mount = next(m for m in mounts(services["agent"]) if _under(pattern, m.target))
        assert agent_mount.source == gen_mount.source and agent_mount.read_only


def test_agent_state_and_file_output_are_on_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    agent = load_for_service(services["agent"])
    assert any(_under(agent.service.data_dir, m.target) and not m.read_only and not m.is_bind
               for m in mounts(services["agent"])), "agent checkpoints would die with it"
    config = load_for_service(services["sink-file"])
    out = config.output("file").options.path
    assert any(_under(out, m.target) and not m.read_only for m in mounts(services["sink-file"]))


def test_node_override_reads_the_kubelet_logs_read_only(node_compose: dict[str, Any]) -> None:
    agent = node_compose["services"]["agent"]
    targets = {m.target: m for m in mounts(agent)}
    for path in ("/var/log/containers", "/var/log/pods"):
        assert targets[path].source == path and targets[path].read_only
    assert "generator" not in active_services(node_compose)
    assert agent["environment"]["TAILRACE_AGENT_ID"] == NODE_ENV["TAILRACE_AGENT_ID"]


# -- health, dependencies, scaling --------------------------------------------------------


def health_port(test: str | list[str]) -> int:
    match = re.search(r"127\.0\.0\.1:(\d+)", " ".join(healthcheck_argv(test)))
    assert match, f"health check does not name 127.0.0.1:PORT: {test}"
    return int(match.group(1))


def test_long_running_tailrace_services_check_service_http(compose: dict[str, Any]) -> None:
    for name, service in tailrace_services(compose).items():
        inv = parse_cli(list(service["command"]))
        check = service.get("healthcheck") or {}
        if inv.path in {("generate",), ("worker",)}:
            assert check.get("disable") is True, f"{name} serves no /health"
            continue
        assert "/health" in " ".join(healthcheck_argv(check["test"])), name
        host, _, port = load_for_service(service).service.http.rpartition(":")
        assert host in ("0.0.0.0", "127.0.0.1", ""), name
        assert health_port(check["test"]) == int(port), name


def test_depends_on_waits_for_health_only_where_there_is_a_check(compose: dict[str, Any]
                                                                  ) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                check = services[dep].get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), \
                    f"{name} waits for {dep} to be healthy, but {dep} has no health check"
    for name in ("agent", "processor", "sink-es", "sink-file"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["sink-es"]["depends_on"]["elasticsearch"]["condition"] == "service_healthy"


def test_processor_scales_with_replicas_and_scale_flag(compose: dict[str, Any]) -> None:
    processor = compose["services"]["processor"]
    assert replicas(processor) >= 2
    # `--scale processor=N` needs no fixed name and no fixed host port.
    assert "container_name" not in processor and "ports" not in processor
    assert parse_cli(list(processor["command"])).params["workers"] == 1


def test_stop_grace_period_covers_the_drain(compose: dict[str, Any]) -> None:
    for name, service in tailrace_services(compose).items():
        inv = parse_cli(list(service["command"]))
        if inv.path in NO_CONFIG_COMMANDS:
            continue
        grace = service["stop_grace_period"]
        assert grace.endswith("s")
        timeout = load_for_service(service).service.shutdown_timeout_s
        assert float(grace[:-1]) > timeout, name


def test_redis_keeps_data_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    args = redis["command"]
    opts = dict(zip(args[1::2], args[2::2], strict=True))
    assert opts["--appendonly"] == "yes"
    assert opts["--maxmemory-policy"] == "noeviction"
    assert any(m.target == "/data" and not m.is_bind for m in mounts(redis))
    limit = docker_size(redis["deploy"]["resources"]["limits"]["memory"])
    assert limit > redis_size(opts["--maxmemory"])
    assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]


def test_elasticsearch_is_single_node_without_security_with_a_heap(compose: dict[str, Any]
                                                                   ) -> None:
    es = compose["services"]["elasticsearch"]
    env = es["environment"]
    assert env["discovery.type"] == "single-node"
    assert env["xpack.security.enabled"] == "false"
    heap = dict(re.findall(r"-Xm([sx])(\S+)", env["ES_JAVA_OPTS"]))
    assert heap["s"] == heap["x"], "set min and max heap to the same size"
    assert docker_size(es["deploy"]["resources"]["limits"]["memory"]) > docker_size(heap["x"])
    kibana = compose["services"]["kibana"]
    assert kibana["image"].rsplit(":", 1)[1] == es["image"].rsplit(":", 1)[1]
    assert kibana["depends_on"]["elasticsearch"]["condition"] == "service_healthy"


def test_es_output_points_at_the_elasticsearch_service(compose: dict[str, Any]) -> None:
    config = load_config(COMPOSE_CONFIG, build_registry())
    hosts = config.output("es").options.hosts
    port = compose["services"]["elasticsearch"]["ports"][0].rsplit(":", 1)[1]
    assert hosts == [f"http://elasticsearch:{port}"]


def test_broker_is_the_redis_service(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(COMPOSE_CONFIG.read_text())
    port = compose["services"]["redis"]["ports"][0].rsplit(":", 1)[1]
    assert config["service"]["broker"].startswith(f"redis://redis:{port}/")

