"""The Kubernetes manifests: valid objects, consistent with each other, the config and the CLI.

Every object is validated against the Kubernetes API's own JSON schemas (strict: an
unknown field is an error), for the oldest and the newest release we claim; then the
tests check what a schema cannot: selectors, mounts, ports, probes, commands and config.
"""

from __future__ import annotations

import copy
import fnmatch
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from deploy_model import (
    K8S_DIR,
    k8s_documents,
    k8s_quantity,
    parse_cli,
    pod_specs,
    redis_size,
)

from tailrace.cli.main import cli
from tailrace.cli.registry import build_registry
from tailrace.config import Config, load_config

#: Kubernetes releases the manifests are validated against (oldest supported, newest).
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
NAMESPACE = "tailrace"
CONFIG_KEY = "tailrace.yaml"
NODE = "node-a"


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return k8s_documents()


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def configmap_text(docs: list[dict[str, Any]]) -> str:
    return str(find(docs, "ConfigMap")["data"][CONFIG_KEY])


def load_mounted_config(docs: list[dict[str, Any]], tmp_path: Path,
                        env: dict[str, str] | None = None) -> Config:
    text = configmap_text(docs)
    path = tmp_path / CONFIG_KEY
    path.write_text(text)
    return load_config(path, build_registry(), env=env or {})


def tailrace_containers(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any],
                                                                  dict[str, Any]]]:
    """(workload, pod spec, container) for every container of the tailrace image."""
    return [(w, spec, c) for w, spec in pod_specs(docs).items() for c in spec["containers"]
            if c["image"].split(":")[0].split("/")[-1] == "tailrace"]


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's plain env values; downward-API node names become ``NODE``."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            env[e["name"]] = NODE
    return env


# -- objects ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_is_valid_for_kubernetes(docs: list[dict[str, Any]], version: str
                                              ) -> None:
    errors = []
    for doc in docs:
        obj = {k: v for k, v in doc.items() if k != "__file__"}
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['__file__']}: {doc['kind']}/{doc['metadata']['name']}: "
                          f"{exc.message} at {'.'.join(map(str, exc.path))}")
    assert not errors, "\n".join(errors)


def test_strict_validation_rejects_an_unknown_field(docs: list[dict[str, Any]]) -> None:
    ds = copy.deepcopy(find(docs, "DaemonSet"))
    del ds["__file__"]
    ds["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_and_one_namespace(docs: list[dict[str, Any]]
                                                              ) -> None:
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    listed = set(yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())["resources"])
    assert files == listed
    assert find(docs, "Namespace")["metadata"]["name"] == NAMESPACE
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names))


def test_kustomize_builds_the_manifests(docs: list[dict[str, Any]]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed here (the other tests read the same files)")
    out = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    built = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == \
        sorted((d["kind"], d["metadata"]["name"]) for d in docs)
    images = {c["image"] for d in built if d["kind"] in ("Deployment", "DaemonSet")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"tailrace:dev"}


# -- workloads ----------------------------------------------------------------------------


def test_selectors_match_their_pod_labels(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), doc["metadata"]["name"]
        if doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
            assert any(selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                       for d in docs if d["kind"] == "Deployment")
    workloads = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]
    selectors = [tuple(sorted(d["spec"]["selector"]["matchLabels"].items())) for d in workloads]
    assert len(selectors) == len(set(selectors)), "two workloads select the same pods"


def test_every_container_has_resources_probes_and_a_locked_down_context(
        docs: list[dict[str, Any]]) -> None:
    for workload, spec, c in [(w, s, c) for w, s in pod_specs(docs).items()
                              for c in s["containers"]]:
        where = f"{workload}/{c['name']}"
        res = c["resources"]
        assert {"cpu", "memory"} <= set(res["requests"]) and "memory" in res["limits"], where
        assert k8s_quantity(res["limits"]["memory"]) >= k8s_quantity(res["requests"]["memory"]), \
            where
        assert c.get("readinessProbe") and c.get("livenessProbe"), where
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"], where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        volumes = {v["name"] for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for d in docs if d["kind"] == "StatefulSet"
                  for t in d["spec"].get("volumeClaimTemplates", [])}
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes | claims, f"{where} mounts unknown volume {m['name']}"
        ports = {p["name"] for p in c.get("ports", [])}
        for probe in (c["readinessProbe"], c["livenessProbe"]):
            port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
            assert port is None or port in ports, f"{where}: probe port {port} is not declared"


def test_tailrace_commands_are_accepted_by_the_cli_and_read_the_configmap(
        docs: list[dict[str, Any]]) -> None:
    configmap = find(docs, "ConfigMap")["metadata"]["name"]
    assert tailrace_containers(docs)
    for workload, spec, c in tailrace_containers(docs):
        inv = parse_cli(list(c["args"]))
        config_path = Path(inv.params["config_path"])
        volumes = {v["name"]: v for v in spec["volumes"]}
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(config_path.parent))
        assert volumes[mount["name"]]["configMap"]["name"] == configmap, workload
        assert mount.get("readOnly") is True and config_path.name == CONFIG_KEY, workload
        assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"


def test_probes_and_scrape_port_are_the_configured_http_endpoint(
        docs: list[dict[str, Any]], tmp_path: Path) -> None:
    for workload, spec, c in tailrace_containers(docs):
        config = load_mounted_config(docs, tmp_path, container_env(c))
        host, _, port = (config.service.http or "").rpartition(":")
        assert host == "0.0.0.0", "probes come from the kubelet: listen on the pod IP"
        (http,) = [p for p in c["ports"] if p["name"] == "http"]
        assert http["containerPort"] == int(port), workload
        assert c["readinessProbe"]["httpGet"]["path"] == "/health"
        assert c["livenessProbe"]["httpGet"]["path"] == "/metrics", \
            "/health is 503 while Redis is down: restarting would not help"
        annotations = next(d for d in docs if f"{d['kind']}/{d['metadata']['name']}" ==
                           workload)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == port, workload
        grace = spec["terminationGracePeriodSeconds"]
        assert grace > config.service.shutdown_timeout_s, workload


def test_agent_daemonset_reads_host_logs_as_its_node(docs: list[dict[str, Any]],
                                                     tmp_path: Path) -> None:
    ds = find(docs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert parse_cli(list(c["args"])).path == ("agent",)
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path in ("/var/log/containers", "/var/log/pods"):
        assert host_paths[mounts[path]["name"]] == path and mounts[path]["readOnly"], path
    config = load_mounted_config(docs, tmp_path, container_env(c))
    assert config.service.agent_name == NODE, "the agent id must be the node name"
    for pattern in config.inputs[0].options.path:
        assert any(pattern.startswith(p + "/") for p in ("/var/log/containers",))
    state = mounts[config.service.data_dir]
    assert host_paths.get(state["name"]) == config.service.data_dir and not state.get("readOnly")
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["automountServiceAccountToken"] is False


def test_processors_and_sinks_are_scaled_deployments(docs: list[dict[str, Any]],
                                                     tmp_path: Path) -> None:
    roles: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for d in docs:
        if d["kind"] == "Deployment":
            (c,) = d["spec"]["template"]["spec"]["containers"]
            roles.setdefault(parse_cli(list(c["args"])).path, []).append(d)
            assert d["spec"]["replicas"] >= 2, d["metadata"]["name"]
            assert d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert set(roles) == {("processor",), ("sink",)}
    config = load_mounted_config(docs, tmp_path)
    served = set()
    for d in roles[("sink",)]:
        (c,) = d["spec"]["template"]["spec"]["containers"]
        output = parse_cli(list(c["args"])).params["output"]
        plugin = config.output(output).plugin
        assert not plugin.single_writer, f"{output} allows one writer, not {d['spec']['replicas']}"
        served.add(output)
    assert served == {o.id for o in config.outputs}, "an output has no sink Deployment"


def test_redis_statefulset_persists_and_the_broker_url_reaches_it(
        docs: list[dict[str, Any]], tmp_path: Path) -> None:
    sts = find(docs, "StatefulSet", "redis")
    governing = find(docs, "Service", sts["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    args = c["args"][1:]
    opts = dict(zip(args[::2], args[1::2], strict=True))
    assert opts["--appendonly"] == "yes" and opts["--maxmemory-policy"] == "noeviction"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (mount,) = c["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"] and mount["mountPath"] == opts["--dir"]
    assert k8s_quantity(c["resources"]["limits"]["memory"]) > redis_size(opts["--maxmemory"])
    config = load_mounted_config(docs, tmp_path)
    m = re.fullmatch(r"redis://([^:/]+):(\d+)/\d+", config.service.broker or "")
    assert m, config.service.broker
    service = find(docs, "Service", m.group(1))
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == int(m.group(2))
    assert port["targetPort"] in {p["name"] for p in c["ports"]}


def test_configmap_config_passes_config_check(docs: list[dict[str, Any]], tmp_path: Path
                                              ) -> None:
    text = configmap_text(docs)
    path = tmp_path / CONFIG_KEY
    path.write_text(text)
    result = CliRunner().invoke(cli, ["config", "check", "-q", "-c", str(path)])
    assert result.exit_code == 0, result.output


def test_agent_does_not_ship_its_own_namespace(docs: list[dict[str, Any]], tmp_path: Path
                                               ) -> None:
    config = load_mounted_config(docs, tmp_path)
    excluded = config.inputs[0].options.exclude_path
    own = f"/var/log/containers/tailrace-agent-x1_{NAMESPACE}_agent-{'0' * 64}.log"
    assert any(fnmatch.fnmatch(own, pattern) for pattern in excluded)

