"""Pods, tag and chain of the kubernetes filter tests, shared with the reserved-fields tests.

Its own module (not ``test_kubernetes``): tests/test_deploy has a ``test_kubernetes`` too, and
under ``--import-mode=importlib`` an import by that name can find the other one.
"""

from __future__ import annotations

import json
from pathlib import Path

from pconf import config

from processors.chain import Chain

CID = "aeeccc7a9f00f6e4e066aeff0434cf80621215071f1b20a51e8340aa7c35eac6"
TAG = f"kube.var.log.containers.apache-logs-annotated_default_apache-{CID}.log"
PODS = {"items": [{
    "metadata": {"name": "apache-logs-annotated", "namespace": "default", "uid": "pod-uid-1",
                 "labels": {"app": "apache-logs"},
                 "annotations": {"fluentbit.io/parser": "apache2"}},
    "spec": {"nodeName": "minikube",
             "containers": [{"name": "apache", "image": "edsiper/apache_logs"}]},
}, {
    "metadata": {"name": "quiet", "namespace": "default", "uid": "pod-uid-2",
                 "annotations": {"fluentbit.io/exclude": "true"}},
    "spec": {"containers": [{"name": "c"}]},
}]}


def write_pods(tmp_path: Path, doc: object = PODS) -> Path:
    path = tmp_path / "pods.json"
    path.write_text(json.dumps(doc))
    return path


def kube_chain(tmp_path: Path, extra: str = "") -> Chain:
    write_pods(tmp_path)
    cfg = config(f"""
pipeline:
  filters:
    - {{name: kubernetes, match: 'kube.*', kube_meta_file: pods.json{extra}}}
""", filename=str(tmp_path / "pipeline.yaml"))
    return Chain(cfg)
