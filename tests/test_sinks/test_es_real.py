"""The es output against a real Elasticsearch or OpenSearch (opt-in: set TAILRACE_ES_URL).

``TAILRACE_ES_URL=http://127.0.0.1:9200 pytest -m es`` (the compose stack provides one).
Credentials and TLS from ``TAILRACE_ES_USER``/``TAILRACE_ES_PASSWORD``,
``TAILRACE_ES_API_KEY``, ``TAILRACE_ES_CA`` (CA file) and ``TAILRACE_ES_VERIFY=0``. Every
test works in indices of its own (``tailrace-test-<random>-*``) and deletes them after.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3
from sinkdata import make_records

from sinks.context import OutputContext
from sinks.es import ElasticsearchOutput, ElasticsearchOutputOptions
from sinks.es.transport import auth_header
from tailrace.outcome import Delivered

pytestmark = [pytest.mark.es, pytest.mark.skipif(
    not os.environ.get("TAILRACE_ES_URL"), reason="TAILRACE_ES_URL is not set")]


def _options(**extra: Any) -> ElasticsearchOutputOptions:
    env = os.environ
    auth: dict[str, Any] = {}
    if env.get("TAILRACE_ES_API_KEY"):
        auth["api_key"] = env["TAILRACE_ES_API_KEY"]
    elif env.get("TAILRACE_ES_USER"):
        auth = {"http_user": env["TAILRACE_ES_USER"],
                "http_passwd": env.get("TAILRACE_ES_PASSWORD", "")}
    if env.get("TAILRACE_ES_CA"):
        auth["tls_ca_file"] = env["TAILRACE_ES_CA"]
    if env.get("TAILRACE_ES_VERIFY") == "0":
        auth["tls_verify"] = False
    return ElasticsearchOutputOptions(name="es", hosts=[env["TAILRACE_ES_URL"]], **auth, **extra)


class Cluster:
    """Plain REST calls to the cluster under test."""

    def __init__(self) -> None:
        opts = _options()
        self.url = opts.hosts[0]
        self.headers = {"Content-Type": "application/json"}
        header = auth_header(opts)
        if header:
            self.headers["Authorization"] = header
        self.http = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED" if opts.tls_verify else "CERT_NONE",
            ca_certs=opts.tls_ca_file)
        self.info = self.call("GET", "/")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        r = self.http.request(method, self.url + path, body=data, headers=self.headers)
        return orjson.loads(r.data) if r.data else None

    @property
    def opensearch(self) -> bool:
        return self.info.get("version", {}).get("distribution") == "opensearch"

    def count(self, index: str) -> int:
        self.call("POST", f"/{index}/_refresh")
        return int(self.call("GET", f"/{index}/_count")["count"])


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


@pytest.fixture
def name(cluster: Cluster) -> Iterator[str]:
    base = f"tailrace-test-{uuid.uuid4().hex[:8]}"
    yield base
    if not cluster.opensearch:
        cluster.call("DELETE", f"/_data_stream/logs-{base}-default")
    # Wildcard deletes are refused by default (action.destructive_requires_name): by name.
    listed = cluster.call("GET", f"/_cat/indices/{base}*?format=json&h=index") or []
    for entry in listed if isinstance(listed, list) else []:
        cluster.call("DELETE", f"/{entry['index']}")


def output(tmp_path: Path, **options: Any) -> ElasticsearchOutput:
    return ElasticsearchOutput(_options(**options), OutputContext("es.real", tmp_path, Path))


def test_real_cluster_indexes_once_and_answers_409_to_a_redelivery(
        tmp_path: Path, cluster: Cluster, name: str) -> None:
    out = output(tmp_path, index=f"{name}-%Y.%m.%d")
    recs = make_records(500)
    assert isinstance(out.write_batch(recs), Delivered)
    again = out.write_batch(recs)
    assert isinstance(again, Delivered) and not again.rejected
    assert out.stats["conflicts"] == 500
    assert cluster.count(f"{name}-*") == 500
    out.close()


def test_real_cluster_mapping_errors_are_rejected_with_type_and_reason(
        tmp_path: Path, cluster: Cluster, name: str) -> None:
    cluster.call("PUT", f"/{name}-fixed", {"mappings": {"properties": {"code": {"type": "long"}}}})
    out = output(tmp_path, index=f"{name}-fixed")
    recs = make_records(20)
    recs[5]["code"] = "not-a-number"
    result = out.write_batch(recs)
    assert isinstance(result, Delivered)
    (rej,) = result.rejected
    assert rej.record["_id"] == "r0000005"
    assert "parsing_exception" in rej.reason and "[code]" in rej.reason
    assert cluster.count(f"{name}-fixed") == 19
    out.close()


def test_real_cluster_takes_a_data_stream(tmp_path: Path, cluster: Cluster, name: str) -> None:
    if cluster.opensearch:
        pytest.skip("OpenSearch needs an index template for data streams")
    stream = f"logs-{name}-default"
    out = output(tmp_path, data_stream=stream)
    assert isinstance(out.write_batch(make_records(50)), Delivered)
    assert isinstance(out.write_batch(make_records(50)), Delivered)
    assert cluster.count(stream) == 50
    out.close()
