"""The kubernetes filter: agent metadata and tag under Fluent Bit's names, pod metadata file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kubeparts import CID, TAG, kube_chain, write_pods
from pconf import batch, config, records, run

from processors.chain import Chain
from tailrace.errors import ConfigError


def test_documented_workflow_metadata_from_the_tag(tmp_path: Path) -> None:
    res = kube_chain(tmp_path).run(batch(["hello"], tag=TAG))
    assert res.records[0]["kubernetes"] == {
        "pod_name": "apache-logs-annotated", "namespace_name": "default",
        "container_name": "apache", "docker_id": CID, "pod_id": "pod-uid-1", "host": "minikube",
        "labels": {"app": "apache-logs"},
        "annotations": {"fluentbit.io/parser": "apache2"},
        "container_image": "edsiper/apache_logs",
    }


def test_agent_metadata_wins_over_the_tag_and_is_renamed(tmp_path: Path) -> None:
    meta = {"kubernetes.pod": "apache-logs-annotated", "kubernetes.namespace": "default",
            "kubernetes.container": "apache", "kubernetes.container_id": CID}
    res = kube_chain(tmp_path, ", labels: false, annotations: false").run(
        batch(["x"], tag="kube.other", meta=meta))
    k = res.records[0]["kubernetes"]
    assert k["pod_name"] == "apache-logs-annotated" and k["docker_id"] == CID
    assert "labels" not in k and "annotations" not in k and "pod" not in k


def test_documented_exclude_annotation_drops_the_pods_records(tmp_path: Path) -> None:
    quiet_tag = f"kube.var.log.containers.quiet_default_c-{CID}.log"
    c = kube_chain(tmp_path, ", k8s-logging.exclude: on")
    res = c.run(batch(["a", "b"], tag=quiet_tag))
    assert res.records == [] and res.counters["excluded"] == 2
    assert len(kube_chain(tmp_path).run(batch(["a"], tag=quiet_tag)).records) == 1


def test_merge_log_parses_json_into_the_record_or_under_a_key(tmp_path: Path) -> None:
    c = kube_chain(tmp_path, ", merge_log: on, keep_log: off")
    res = c.run(batch(['{"level": " warn ", "n": 1}', "not json"], tag=TAG))
    assert res.records[0]["level"] == "warn" and res.records[0]["n"] == 1
    assert "log" not in res.records[0]
    assert res.records[1]["log"] == "not json" and res.counters["merge_failures"] == 1
    c = kube_chain(tmp_path, ", merge_log: on, merge_log_key: log_processed")
    res = c.run(batch(['{"a": 1}'], tag=TAG))
    assert res.records[0]["log_processed"] == {"a": 1} and res.records[0]["log"] == '{"a": 1}'


def test_documented_parser_annotation_picks_the_merge_parser(tmp_path: Path) -> None:
    line = ('192.168.2.20 - - [28/Jul/2006:10:27:10 -0300] "GET /cgi-bin/try/ HTTP/1.0" 200 3395'
            ' "-" "Mozilla/5.0"')
    c = kube_chain(tmp_path, ", merge_log: on, k8s-logging.parser: on")
    rec = c.run(batch([line], tag=TAG)).records[0]
    assert rec["code"] == "200" and rec["path"] == "/cgi-bin/try/"


def test_the_metadata_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    c = kube_chain(tmp_path, ", kube_meta_refresh_s: 0")
    assert c.run(batch(["a"], tag=TAG)).records[0]["kubernetes"]["labels"] == {
        "app": "apache-logs"}
    path = write_pods(tmp_path, {"default/apache-logs-annotated": {"labels": {"app": "v2"}}})
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 5))
    assert c.run(batch(["a"], tag=TAG)).records[0]["kubernetes"]["labels"] == {"app": "v2"}
    path.write_text("{{{ not yaml")
    os.utime(path, (st.st_atime, st.st_mtime + 10))
    assert c.run(batch(["a"], tag=TAG)).records[0]["kubernetes"]["labels"] == {"app": "v2"}


def test_records_without_kubernetes_identity_pass_unchanged() -> None:
    res = run("- {name: kubernetes}", records({"log": "x"}, tag="host.syslog"))
    assert "kubernetes" not in res.records[0]


def test_an_unknown_merge_parser_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown parser 'nope'"):
        config("pipeline:\n  filters:\n    - {name: kubernetes, merge_parser: nope}\n")


def test_a_merged_line_whose_time_does_not_fit_keeps_its_fields_and_read_time(
        tmp_path: Path) -> None:
    c = kube_chain(tmp_path, ", merge_log: on, merge_parser: json")  # nginx's time format
    res = c.run(batch(['{"time": "2024-01-01T00:00:00Z", "n": 1}'], tag=TAG))
    rec = res.records[0]
    assert rec["n"] == 1 and isinstance(rec["time"], float) and rec["time"] > 1.7e9
    assert "(parser 'json')" in rec["time_error"] and res.counters["time_errors"] == 1


def test_merge_parser_and_a_custom_tag_prefix(tmp_path: Path) -> None:
    write_pods(tmp_path)
    cfg = config("""
pipeline:
  filters:
    - {name: kubernetes, match: 'k8s.*', kube_tag_prefix: 'k8s.', kube_meta_file: pods.json,
       merge_log: on, merge_parser: logfmt}
""", filename=str(tmp_path / "pipeline.yaml"))
    rec = Chain(cfg).run(batch(["level=info msg=hi"], tag=TAG.replace(
        "kube.var.log.containers.", "k8s."))).records[0]
    assert rec["level"] == "info" and rec["msg"] == "hi"
    assert rec["kubernetes"]["pod_name"] == "apache-logs-annotated"
