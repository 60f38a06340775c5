"""Finding files: globs, path_regex with metadata and tags, Kubernetes names, selectors,
symlinks, exclusions and ignore_older (no Redis needed: the input is driven directly)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from edge_agent.discovery import Discovery, kubernetes_meta
from edge_agent.options import TailOptions
from edge_agent.tail import TailInput

CID = "0123456789abcdef" * 4


def discovery(tmp_path: Path, **opts: Any) -> Discovery:
    options = TailOptions.model_validate({"name": "tail", **opts})
    return Discovery(options, base_dir=tmp_path, host="node-1", input_id="tail.0",
                     plugin_name="tail")


def touch(path: Path, data: bytes = b"line\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def found(d: Discovery) -> list[str]:
    return sorted(p for p, _ in d.scan())


def test_kubernetes_metadata_from_container_link_and_pod_paths() -> None:
    assert kubernetes_meta(f"/var/log/containers/web-1_shop_nginx-{CID}.log") == {
        "pod": "web-1", "namespace": "shop", "container": "nginx", "container_id": CID}
    assert kubernetes_meta("/var/log/pods/shop_web-1_1f2e/nginx/0.log") == {
        "namespace": "shop", "pod": "web-1", "pod_id": "1f2e", "container": "nginx"}


def test_symlinked_container_logs_are_followed_with_metadata_of_link_and_target(
        tmp_path: Path) -> None:
    target = touch(tmp_path / "pods" / "shop_web-1_uid42" / "nginx" / "0.log")
    link = tmp_path / "containers" / f"web-1_shop_nginx-{CID}.log"
    link.parent.mkdir()
    link.symlink_to(target)
    d = discovery(tmp_path, path=str(tmp_path / "containers" / "*.log"),
                  tag="kube.<namespace>.<pod>.<container>")
    assert found(d) == [str(link)]
    desc = d.describe(str(link))
    assert desc.tag == "kube.shop.web-1.nginx"
    assert desc.meta == {"host": "node-1", "kubernetes.namespace": "shop",
                         "kubernetes.pod": "web-1", "kubernetes.container": "nginx",
                         "kubernetes.container_id": CID, "kubernetes.pod_id": "uid42"}


def test_path_regex_filters_globs_and_its_groups_become_metadata_and_tag(
        tmp_path: Path) -> None:
    touch(tmp_path / "apps" / "billing" / "api.log")
    touch(tmp_path / "apps" / "billing" / "api.txt")
    touch(tmp_path / "apps" / "search" / "worker.log")
    d = discovery(tmp_path, path="apps/*/*",
                  path_regex=r"/apps/(?<team>[a-z]+)/(?<service>\w+)\.log$",
                  tag="app.<team>.<service>")
    paths = found(d)
    assert [os.path.basename(p) for p in paths] == ["api.log", "worker.log"]
    desc = d.describe(paths[0])
    assert desc.tag == "app.billing.api"
    assert desc.meta == {"host": "node-1", "team": "billing", "service": "api"}


def test_path_regex_alone_walks_the_folder_before_its_first_special_character(
        tmp_path: Path) -> None:
    touch(tmp_path / "var" / "a" / "deep" / "one.log")
    touch(tmp_path / "var" / "b" / "two.log")
    touch(tmp_path / "elsewhere" / "three.log")
    d = discovery(tmp_path, path_regex=str(tmp_path / "var") + r"/.+/(?P<name>\w+)\.log$")
    assert d.walk_root == str(tmp_path / "var")
    assert [os.path.basename(p) for p in found(d)] == ["one.log", "two.log"]


def test_selectors_include_and_exclude_namespaces_pods_and_containers(tmp_path: Path) -> None:
    logs = tmp_path / "containers"
    for pod, ns, ctr in [("web-1", "shop", "nginx"), ("web-1", "shop", "istio-proxy"),
                         ("db-0", "shop", "postgres"), ("coredns-1", "kube-system", "dns"),
                         ("job-1", "batch", "run")]:
        touch(logs / f"{pod}_{ns}_{ctr}-{CID}.log")
    touch(logs / "not-kubernetes.log")
    d = discovery(tmp_path, path=str(logs / "*.log"),
                  namespaces={"include": ["shop", "batch"], "exclude": ["kube-*"]},
                  pods={"exclude": ["job-*"]}, containers=["nginx", "postgres"])
    assert [os.path.basename(p).split("-0123")[0] for p in found(d)] == [
        "db-0_shop_postgres", "web-1_shop_nginx"]


def test_exclude_only_selector_keeps_files_without_kubernetes_metadata(tmp_path: Path) -> None:
    touch(tmp_path / "logs" / "plain.log")
    touch(tmp_path / "logs" / f"coredns-1_kube-system_dns-{CID}.log")
    d = discovery(tmp_path, path="logs/*.log", namespaces={"exclude": ["kube-system"]})
    assert [os.path.basename(p) for p in found(d)] == ["plain.log"]


def test_exclude_path_matches_full_path_or_name(tmp_path: Path) -> None:
    touch(tmp_path / "logs" / "a.log")
    touch(tmp_path / "logs" / "a.log.gz")
    touch(tmp_path / "logs" / "skip" / "b.log")
    d = discovery(tmp_path, path=["logs/*", "logs/*/*"],
                  exclude_path=["*.gz", str(tmp_path / "logs" / "skip") + "/*"])
    assert [os.path.basename(p) for p in found(d)] == ["a.log"]


def test_star_in_tag_expands_to_the_path(tmp_path: Path) -> None:
    touch(tmp_path / "logs" / "a.log")
    d = discovery(tmp_path, path="logs/*.log", tag="files.*")
    (path,) = found(d)
    assert d.describe(path).tag == "files." + path.replace("/", ".").strip(".")


def _input(tmp_path: Path, **opts: Any) -> TailInput:
    options = TailOptions.model_validate({"name": "tail", **opts})
    return TailInput(options, agent="node-1", input_id="tail.0", partitions=4,
                     base_dir=tmp_path, counters=lambda _k, _n: None)


def test_ignore_older_skips_files_not_modified_recently(tmp_path: Path) -> None:
    touch(tmp_path / "logs" / "fresh.log")
    old = touch(tmp_path / "logs" / "old.log")
    stamp = time.time() - 3600
    os.utime(old, (stamp, stamp))
    inp = _input(tmp_path, path="logs/*.log", ignore_older_s=600)
    inp.table.scan(time.monotonic())
    assert [os.path.basename(tf.path) for tf in inp.table.files.values()] == ["fresh.log"]
    inp.close()


def test_file_whose_first_line_is_incomplete_waits_for_it(tmp_path: Path) -> None:
    log = touch(tmp_path / "logs" / "a.log", b"no newline yet")
    inp = _input(tmp_path, path="logs/*.log")
    inp.table.scan(time.monotonic())
    assert not inp.table.files
    with open(log, "ab") as f:
        f.write(b"\n")
    inp.table.scan(time.monotonic())
    assert len(inp.table.files) == 1
    inp.close()
