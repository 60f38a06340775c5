"""No secret option's value in any error, log line, status record or dead letter.

The secret options are found from the plugins' option models (every built-in plugin, the
example package's entry points and a third-party-style plugin declared here), not listed
by hand, so a new plugin's password is covered the day it is added.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
import tomllib
import typing
import urllib.request
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import redis
import yaml
from click.testing import CliRunner
from esserver import EsServer, Fault
from helpers import ROOT, Role, wait_for, write_config
from pydantic import BaseModel, Field, model_validator
from redis_server import RedisServer, free_port

from tailrace import redaction
from tailrace.cli import cli
from tailrace.cli.registry import build_registry
from tailrace.config import parse_config
from tailrace.errors import ConfigError
from tailrace.lifecycle import Lifecycle
from tailrace.logs import _JsonFormatter, _TextFormatter
from tailrace.options import OutputOptions
from tailrace.outcome import Delivered, Outcome
from tailrace.plugins import Registry
from tailrace.scriptcalls import DeadLetter
from tailrace.serviceconfig import ServiceConfig

SECRET = "S3cretPW-9f2k"
# How the secret may travel besides itself: in a Basic auth header, an api key's base64.
FORMS = (SECRET, base64.b64encode(SECRET.encode()).decode())
# Independent of tailrace.redaction on purpose: what an operator calls a secret.
SECRET_NAME = re.compile(r"passw|secret|token|api_?key|cloud_auth", re.IGNORECASE)
URL_NAME = re.compile(r"host|url|broker|endpoint", re.IGNORECASE)
EXAMPLE = ROOT / "examples" / "tailrace-example"


class TokenOutputOptions(OutputOptions):
    """A third-party output that declares its secret as a plain ``str``."""

    endpoint: str = Field(description="Service URL.")
    token: str = Field(description="Access token.")
    cloud_auth: str | None = Field(None, description="user:password of a hosted service.")
    retries: int = Field(3, ge=0, description="Tries.")

    @model_validator(mode="after")
    def _check(self) -> TokenOutputOptions:
        if self.token == self.endpoint or self.endpoint.startswith("ftp:"):
            # Careless on purpose: a message quoting the token and the URL.
            raise ValueError(f"token {self.token!r} does not fit endpoint {self.endpoint}")
        return self


class TokenOutput:
    name: ClassVar[str] = "tokenout"
    description: ClassVar[str] = "Test output with a plain-str token."
    Options: ClassVar[type[TokenOutputOptions]] = TokenOutputOptions
    single_writer: ClassVar[bool] = False

    def __init__(self, options: TokenOutputOptions, ctx: Any) -> None:
        self.options = options

    def write_batch(self, records: list[dict[str, Any]]) -> Outcome:
        return Delivered()

    def close(self) -> None:
        pass


def every_plugin() -> Registry:
    """Built-ins, the example package's entry points (imported from its source) and ours."""
    reg = build_registry(entry_points=False)
    sys.path.insert(0, str(EXAMPLE))
    try:
        project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
        for group, eps in project["entry-points"].items():
            kind = group.removeprefix("tailrace.")
            for value in eps.values():
                module, _, attr = value.partition(":")
                reg.add(kind, [getattr(import_module(module), attr)])
    finally:
        sys.path.remove(str(EXAMPLE))
    reg.add("outputs", [TokenOutput])
    return reg


def _models(ann: Any) -> list[type[BaseModel]]:
    return [a for a in (ann, *typing.get_args(ann))
            if isinstance(a, type) and issubclass(a, BaseModel)]


def _fields(model: type[BaseModel], pre: tuple[str, ...] = ()
            ) -> typing.Iterator[tuple[tuple[str, ...], Any]]:
    for name, f in model.model_fields.items():
        yield (*pre, name), f.annotation
        for sub in _models(f.annotation):
            yield from _fields(sub, (*pre, name))


def _is_secret(name: str, ann: Any) -> bool:
    return bool(SECRET_NAME.search(name)) or redaction.is_secret_annotation(ann)


REGISTRY = every_plugin()
KINDS = ("inputs", "filters", "parsers", "outputs")
SECRET_OPTIONS = [(kind, name, path)
                  for kind in KINDS for name, cls in getattr(REGISTRY, kind).items()
                  for path, ann in _fields(cls.Options) if _is_secret(path[-1], ann)]
URL_OPTIONS = [(kind, name, path)
               for kind in KINDS for name, cls in getattr(REGISTRY, kind).items()
               for path, ann in _fields(cls.Options) if URL_NAME.search(path[-1])
               and ann in (str, list[str], str | None, list[str] | None)]


def test_the_walk_finds_the_secret_options_of_every_plugin_kind() -> None:
    found = {(name, ".".join(path)) for _, name, path in SECRET_OPTIONS}
    assert {("es", "http_passwd"), ("es", "api_key"), ("tokenout", "token"),
            ("tokenout", "cloud_auth")} <= found, found
    assert {("es", "hosts"), ("tokenout", "endpoint")} <= {
        (name, ".".join(path)) for _, name, path in URL_OPTIONS}
    # Built-in secrets are SecretStr, so the reference and `--help` say so too.
    for kind, name, path in SECRET_OPTIONS:
        if name != "tokenout":
            ann = dict(_fields(getattr(REGISTRY, kind)[name].Options))[path]
            assert redaction.is_secret_annotation(ann), f"{name}.{'.'.join(path)} is not SecretStr"


def _dummy(name: str, ann: Any) -> Any:
    if ann in (int, float):
        return 1
    if typing.get_origin(ann) is list:
        return ["x"]
    return "http://svc:1" if URL_NAME.search(name) else "x"


def _entry(kind: str, name: str, **extra: Any) -> dict[str, Any]:
    cls = getattr(REGISTRY, kind)[name]
    entry: dict[str, Any] = {"format": name, "name": "p1"} if kind == "parsers" else {"name": name}
    for fname, f in cls.Options.model_fields.items():
        if f.is_required() and fname not in entry:
            entry[fname] = _dummy(fname, f.annotation)
    entry.update(extra)
    return entry


def _set(entry: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = entry
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    return entry


def _doc(kind: str, entry: dict[str, Any], service: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    pipeline: dict[str, Any] = {"inputs": [{"name": "tail", "path": "x"}]}
    doc: dict[str, Any] = {"service": service or {}, "pipeline": pipeline}
    if kind == "parsers":
        doc["parsers"] = [entry]
    elif kind == "inputs":
        pipeline["inputs"] = [entry]
    else:
        pipeline[kind] = [entry]
    return doc


def _errors(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(doc), "p.yaml", REGISTRY)
    return str(info.value)


def _assert_clean(text: str, where: str) -> None:
    for form in FORMS:
        assert form not in text, f"{where} shows a secret:\n{text}"


# What a secret option needs beside it to be valid.
COMPANIONS = {("es", "http_passwd"): {"http_user": "a"}}
# Known cross-field rules of the built-ins that involve their secrets.
CROSS_FIELD = {
    "es": [{"http_user": "a", "http_passwd": SECRET, "api_key": f"id:{SECRET}"},
           {"http_passwd": SECRET},
           {"api_key": SECRET, "http_user": "a"}],
    "tokenout": [{"token": SECRET, "endpoint": f"ftp://svc/{SECRET}"}],
}


@pytest.mark.parametrize(("kind", "name", "path"), SECRET_OPTIONS,
                         ids=[f"{n}.{'.'.join(p)}" for _, n, p in SECRET_OPTIONS])
def test_config_errors_never_show_a_secret_option(kind: str, name: str,
                                                  path: tuple[str, ...]) -> None:
    valid = _set(_entry(kind, name, **COMPANIONS.get((name, path[-1]), {})), path, SECRET)
    # The resolved pipeline `config check` prints.
    config = parse_config(yaml.safe_dump(_doc(kind, valid)), "p.yaml", REGISTRY)
    _assert_clean(yaml.safe_dump(config.to_dict()), "the resolved pipeline")
    cases = [
        _set(_entry(kind, name), path, [SECRET]),              # the secret's own type error
        _set(_entry(kind, name), path, {"k": SECRET}),
        {**valid, "no_such_key": 1},                            # an unknown key beside it
        {**valid, **{k: -5 for k, f in getattr(REGISTRY, kind)[name].Options.model_fields.items()
                     if f.annotation is int}},                  # field errors beside it
        *({**_entry(kind, name), **cross} for cross in CROSS_FIELD.get(name, [])),
        *({**_entry(kind, name), **cross, "workers": 0} for cross in CROSS_FIELD.get(name, [])),
    ]
    for entry in cases:
        _assert_clean(_errors(_doc(kind, entry)), f"config errors of {entry}")


URL_VALUES = [f"http://u:{SECRET}@h:9200", f"ftp://u:{SECRET}@h", f"u:{SECRET}@h:notaport",
              f"https://u:{SECRET}@"]


@pytest.mark.parametrize(("kind", "name", "path"), URL_OPTIONS,
                         ids=[f"{n}.{'.'.join(p)}" for _, n, p in URL_OPTIONS])
def test_config_errors_never_show_a_url_password(kind: str, name: str,
                                                 path: tuple[str, ...]) -> None:
    many = typing.get_origin(dict(_fields(getattr(REGISTRY, kind)[name].Options))[path]) is list
    for url in URL_VALUES:
        entry = _set(_entry(kind, name), path, [url] if many else url)
        try:
            config = parse_config(yaml.safe_dump(_doc(kind, entry)), "p.yaml", REGISTRY)
        except ConfigError as exc:
            _assert_clean(str(exc), f"config errors of {entry}")
        else:
            _assert_clean(yaml.safe_dump(config.to_dict()), "the resolved pipeline")


@pytest.mark.parametrize("broker", [
    f"redis://u:{SECRET}@h:notaport/0", f"bogus://u:{SECRET}@h:1",
    [f"redis+cluster://u:{SECRET}@h:1", f"redis://u:{SECRET}@h:2"],
    f"redis+sentinel://h:1/svc?sentinel_password={SECRET}&x=1", f"redis+cluster://u:{SECRET}@h:1/3",
])
def test_config_errors_never_show_the_broker_password(broker: Any) -> None:
    assert "broker" in ServiceConfig.model_fields
    doc = _doc("outputs", {"name": "stdout"}, {"broker": broker, "partitions": 0})
    _assert_clean(_errors(doc), f"config errors of broker {broker}")


def test_config_check_of_the_issue_prints_neither_password_nor_key(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    for out in (f"{{name: es, http_user: a, http_passwd: {SECRET}, api_key: 'id:{SECRET}'}}",
                f"{{name: es, http_passwd: {SECRET}}}"):
        path.write_text(f"pipeline: {{inputs: [{{name: tail, path: x}}], outputs: [{out}]}}\n")
        result = CliRunner().invoke(cli, ["config", "check", "-c", str(path)])
        assert result.exit_code == 2
        assert "pipeline.outputs[0]: " in result.stderr
        _assert_clean(result.output, "config check")


def test_a_secret_json_would_escape_is_scrubbed_from_json_log_lines() -> None:
    odd = 'pa"ss\\w0rd'
    redaction.register_secrets([odd])
    record = logging.LogRecord("x", logging.ERROR, "f", 1, "%s", (f"refused {odd}",), None)
    record.fields = {"reason": f"bad {odd}"}  # type: ignore[attr-defined]
    line = _JsonFormatter().format(record)
    escaped = orjson.dumps(odd).decode()[1:-1]
    assert odd not in line and escaped not in line, line
    assert orjson.loads(line)["reason"] == "bad ***"


def test_free_text_is_scrubbed_in_logs_status_records_and_dead_letters() -> None:
    config = parse_config(yaml.safe_dump(_doc("outputs", _entry(
        "outputs", "tokenout", token=SECRET, endpoint="http://svc:1"))), "p.yaml", REGISTRY)
    assert config.outputs[0].options.token == SECRET
    text = f"server said: bad token {SECRET} for http://me:other-pw@svc:1 ({FORMS[1]})"
    record = logging.LogRecord("x", logging.ERROR, "f", 1, "%s", (text,), None)
    record.fields = {"reason": text}  # type: ignore[attr-defined]
    for fmt in (_TextFormatter("%(message)s"), _JsonFormatter()):
        line = fmt.format(record)
        _assert_clean(line, "a log line")
        assert "other-pw" not in line and "***" in line
    life = Lifecycle("sink")
    life.thread("w").set_state("broker_down", text)
    _assert_clean(orjson.dumps(life.snapshot()).decode(), "a status record")
    fields = DeadLetter("records", b"", "sink:x", "tokenout.0", text, "1-0").fields(0)
    _assert_clean(repr(fields), "a dead letter")


@pytest.mark.slow
def test_runtime_errors_status_and_dead_letters_never_show_secrets(tmp_path: Path) -> None:
    """A real pipeline: a password-protected Redis, an es output with basic auth whose
    server quotes the credentials in its errors (as a misbehaving proxy may)."""
    server = RedisServer(tmp_path / "redis").start()
    with server.client() as admin:
        admin.config_set("requirepass", SECRET)
    broker = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
    es = EsServer(users={"elastic": SECRET}).start()
    auth = base64.b64encode(f"elastic:{SECRET}".encode()).decode()
    quoted = f"credentials elastic:{SECRET} (Authorization: Basic {auth}) refused"
    es.add_fault(Fault(status=503, reason=quoted, times=2))
    es.add_fault(Fault(item_status=400, error_type="mapper_parsing_exception", reason=quoted,
                       times=3))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("".join(f"line {i}\n" for i in range(20)))
    http = f"127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path / "p.yaml", {
        "service": {"data_dir": str(tmp_path / "data"), "partitions": 1, "http": http,
                    "publish_interval_s": 0.5, "heartbeat_ms": 300},
        "pipeline": {
            "inputs": [{"name": "tail", "path": str(logs / "*.log"), "read_from_head": True,
                        "refresh_interval_s": 0.2}],
            "outputs": [{"name": "es", "alias": "es", "hosts": [es.url], "http_user": "elastic",
                         "http_passwd": "${ES_PASSWORD}", "retry_backoff_ms": 50,
                         "retry_backoff_max_ms": 200}],
        },
    })
    run = Role("run", cfg, broker)
    run.env["ES_PASSWORD"] = SECRET
    run.start()
    client = redis.Redis(port=server.port, password=SECRET)
    try:
        wait_for(lambda: es.store.count("*") >= 17, timeout=60, message="17 documents in es")
        dlq = [k for k in client.scan_iter("tr:*dlq*")]
        wait_for(lambda: sum(client.xlen(k) for k in dlq) >= 3 if dlq else
                 dlq.extend(client.scan_iter("tr:*dlq*")), timeout=30, message="3 dead letters")
        with urllib.request.urlopen(f"http://{http}/api/v1/status", timeout=5) as resp:
            _assert_clean(resp.read().decode(), "/api/v1/status")
        for key in dlq:
            _assert_clean(repr(client.xrange(key)), "the dead-letter stream")
        env = {"TAILRACE_BROKER": broker}
        for args in (["status", "--json"], ["dlq", "list"], ["dlq", "show", "--all"]):
            result = CliRunner().invoke(cli, [*args, "-c", str(cfg)], env=env)
            _assert_clean(result.output, f"tailrace {' '.join(args)}")
        for rec in client.scan_iter("tr:worker:*"):
            _assert_clean(repr(client.get(rec)), "a published status record")
    finally:
        code = run.stop()
        client.close()
        es.stop()
        server.stop()
    output = run.output()
    assert "mapper_parsing_exception" in output, output[-2000:]  # the errors were logged
    _assert_clean(output, "the pipeline's log")
    assert code == 0, output[-2000:]
