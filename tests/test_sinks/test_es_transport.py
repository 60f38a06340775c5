"""The HTTP transport against the Bulk API test server: auth, TLS, gzip, failover, faults."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import orjson
import pytest
from esserver import EsServer, Fault

from sinks.es.config import ElasticsearchOutputOptions
from sinks.es.retry import judge
from sinks.es.transport import HttpTransport, identify_nodes, identify_root, support_problem
from tailrace.errors import DeliveryError

BODY = (b'{"create":{"_index":"logs","_id":"a"}}\n{"log":"one"}\n'
        b'{"create":{"_index":"logs","_id":"b"}}\n{"log":"two"}\n')


def transport(*hosts: str, **options: object) -> HttpTransport:
    return HttpTransport(ElasticsearchOutputOptions(name="es", hosts=list(hosts),
                                                    **options))  # type: ignore[arg-type]


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_a_bulk_body_is_indexed_and_the_answer_filtered_to_what_the_verdict_needs(
        es: EsServer) -> None:
    resp = transport(es.url).send(BODY)
    assert resp.status == 200
    assert orjson.loads(resp.body) == {"errors": False,
                                       "items": [{"create": {"status": 201}}] * 2}
    assert es.store.count("logs") == 2


def test_the_ingest_pipeline_is_passed_on(es: EsServer) -> None:
    resp = transport(es.url, pipeline="geo ip").send(BODY)
    assert resp.status == 200  # the server refuses unknown parameters, so it was understood


def test_gzip_bodies_are_sent_compressed_and_understood(es: EsServer) -> None:
    t = transport(es.url, compress="gzip")
    assert t.headers["Content-Encoding"] == "gzip"
    assert judge(t.send(BODY), 2).delivered == 2
    assert es.store.count() == 2


def test_basic_auth_is_accepted_and_a_wrong_password_is_a_config_problem() -> None:
    with EsServer(users={"elastic": "s3cret"}) as srv:
        ok = transport(srv.url, http_user="elastic", http_passwd="s3cret").send(BODY)
        assert ok.status == 200
        bad = transport(srv.url, http_user="elastic", http_passwd="wrong").send(BODY)
        v = judge(bad, 2)
        assert bad.status == 401 and v.config_problem and v.retry == [0, 1]
        assert "wrong" not in v.reason and "s3cret" not in v.reason


@pytest.mark.parametrize("key", ["kid:kvalue", "a2lkOmt2YWx1ZQ=="])
def test_api_keys_work_as_id_colon_key_or_already_encoded(key: str) -> None:
    with EsServer(api_keys={"kid": "kvalue"}) as srv:
        assert transport(srv.url, api_key=key).send(BODY).status == 200
        assert transport(srv.url).send(BODY).status == 401


def test_tls_verifies_the_server_with_the_given_ca(tls_files: dict[str, Path]) -> None:
    with EsServer(certfile=str(tls_files["cert"]), keyfile=str(tls_files["key"])) as srv:
        assert srv.url.startswith("https://")
        ok = transport(srv.url, tls_ca_file=str(tls_files["ca"])).send(BODY)
        assert ok.status == 200
        with pytest.raises(DeliveryError, match="tls_ca_file") as err:
            transport(srv.url).send(BODY)  # the system CAs do not know this server
        assert err.value.retryable
        assert transport(srv.url, tls_verify=False).send(BODY).status == 200


def test_a_host_that_refuses_fails_over_to_the_next_at_once(es: EsServer) -> None:
    dead = closed_port_url()
    t = transport(dead, es.url, host_cooldown_s=60)
    for _ in range(4):
        assert t.send(BODY).host == es.url
    assert t.hosts[0].dead_until > 0, "the refusing host rests"


def test_a_host_answering_503_fails_over_and_the_other_answers(es: EsServer) -> None:
    with EsServer() as sick:
        sick.add_fault(Fault(status=503))
        t = transport(sick.url, es.url)
        answers = {t.send(BODY).host for _ in range(3)}
        assert answers == {es.url}
        assert es.store.count() == 2 and sick.store.count() == 0


def test_when_no_host_answers_the_error_names_every_host_and_is_retryable(
        caplog: pytest.LogCaptureFixture) -> None:
    a, b = closed_port_url(), closed_port_url()
    caplog.set_level(logging.WARNING)
    with pytest.raises(DeliveryError) as err:
        transport(a, b, http_user="elastic", http_passwd="hunter2").send(BODY)
    assert err.value.retryable
    assert a in str(err.value) and b in str(err.value)
    assert "connection refused" in str(err.value)
    assert "hunter2" not in str(err.value) and "hunter2" not in caplog.text


def test_a_slow_answer_times_out_and_is_retryable(es: EsServer) -> None:
    es.add_fault(Fault(delay_s=1.5, times=1))
    with pytest.raises(DeliveryError, match="timeout_s"):
        transport(es.url, timeout_s=0.3).send(BODY)
    assert es.store.count() == 2, "the server indexed it: a retry will meet 409s"


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_dropped_connection_is_resent_once_at_once(es: EsServer, when: str) -> None:
    es.add_fault(Fault(drop=when, times=1))
    v = judge(transport(es.url).send(BODY), 2)
    assert v.delivered == 2
    assert v.conflicts == (2 if when == "after" else 0), "indexed before the drop: 409s"
    assert es.store.count() == 2 and set(es.store.created.values()) == {1}


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_connection_that_keeps_dropping_is_a_retryable_failure(es: EsServer,
                                                                 when: str) -> None:
    es.add_fault(Fault(drop=when, times=2))
    with pytest.raises(DeliveryError, match="dropped") as err:
        transport(es.url).send(BODY)
    assert err.value.retryable
    assert es.store.count() == (2 if when == "after" else 0)


@pytest.mark.parametrize("doc, found", [
    ({"version": {"number": "8.19.21", "build_flavor": "default"}}, "Elasticsearch 8.19.21"),
    ({"version": {"distribution": "opensearch", "number": "3.6.0"}}, "OpenSearch 3.6.0"),
    ({"error": "Incorrect HTTP method for uri [/] and method [GET]", "status": 405}, None),
])
def test_the_root_answer_names_the_product_and_version(doc: object, found: str | None) -> None:
    assert identify_root(doc) == found


@pytest.mark.parametrize("node, found", [
    ({"version": "8.19.21", "build_flavor": "default"}, "Elasticsearch 8.19.21"),
    ({"version": "2.19.6", "build_type": "zip"}, "OpenSearch 2.19.6"),
])
def test_without_a_root_endpoint_the_nodes_api_names_it(node: object, found: str) -> None:
    assert identify_nodes({"nodes": {"n1": node}}) == found


def test_a_server_too_old_for_bulk_without_type_is_named_as_a_problem() -> None:
    assert support_problem("Elasticsearch 6.8.23") is not None
    assert support_problem("Elasticsearch 7.17.0") is None
    assert support_problem("OpenSearch 1.3.0") is None


def test_the_transport_says_once_which_server_answers(
        es: EsServer, caplog: pytest.LogCaptureFixture) -> None:
    t = HttpTransport(ElasticsearchOutputOptions(name="es", hosts=[es.url]))
    body = b'{"create":{"_index":"a","_id":"1"}}\n{"m":1}\n'
    with caplog.at_level(logging.INFO, logger="sinks.es.transport"):
        t.send(body)
        t.send(body)
    found = [r.getMessage() for r in caplog.records if "es_server_found" in r.getMessage()]
    assert found == [f"es_server_found: {es.url}: Elasticsearch 8.15.0"]
    assert t.servers == {es.url: "Elasticsearch 8.15.0"}
    t.close()
