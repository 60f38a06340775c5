"""Options of the ``es`` output: one typed model, the single declaration of every option.

Names follow Fluent Bit's ``es`` output where one exists (``http_user``, ``http_passwd``,
``time_key``, ``include_tag_key``, ``tag_key``, ``pipeline``, ``compress``), so its users
feel at home. Secrets are :class:`~pydantic.SecretStr`: ``config check`` and logs show
``**********``; put them in the environment (``http_passwd: ${ES_PASSWORD}``).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from tailrace.options import ByteSize, OutputOptions

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_DOCS",
    "DEFAULT_INDEX",
    "ElasticsearchOutputOptions",
]

DEFAULT_INDEX = "tailrace-%Y.%m.%d"
DEFAULT_BATCH_DOCS = 5000
DEFAULT_BATCH_BYTES = 5 * 1024 * 1024
DEFAULT_WORKERS = 2
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_RETRY_BACKOFF_MS = 200
DEFAULT_RETRY_BACKOFF_MAX_MS = 30_000
DEFAULT_HOST_COOLDOWN_S = 10.0


class ElasticsearchOutputOptions(OutputOptions):
    """Options of the ``es`` output (Elasticsearch 7/8/9, OpenSearch 1/2/3, Bulk API)."""

    hosts: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:9200"],
        min_length=1,
        description="Base URLs of the cluster's nodes (`http://` or `https://`, with an "
        "optional path prefix behind a proxy). Requests go round-robin to the hosts that "
        "answer; a host that fails is skipped for `host_cooldown_s` and the request goes "
        "to the next one at once.",
    )
    index: str | None = Field(
        None,
        description=f"Index name template: strftime fields of the record's time (UTC) and "
        f"`${{record.field}}` parts (`app-${{record.kubernetes.namespace}}-%Y.%m.%d`). Default "
        f"`{DEFAULT_INDEX}`. A record without a referenced field is dead-lettered.",
    )
    data_stream: str | None = Field(
        None,
        description="Write to this data stream instead of `index` (same template syntax; "
        "e.g. `logs-nginx-default`). Documents get `time_key` (`@timestamp`), as data "
        "streams require.",
    )
    pipeline: str | None = Field(None, description="Ingest pipeline to run on every document.")
    time_key: str = Field("@timestamp", description="Field that receives the record's `time` "
                          "as an ISO 8601 UTC date.")
    time_key_nanos: bool = Field(False, description="Write nanoseconds instead of milliseconds.")
    include_tag_key: bool = Field(False, description="Add the record's tag to the document.")
    tag_key: str = Field("tag", description="Field name of the tag with `include_tag_key`.")
    http_user: str | None = Field(None, description="Basic authentication user.")
    http_passwd: SecretStr | None = Field(
        None, description="Basic authentication password (use `${ENV_VAR}`)."
    )
    api_key: SecretStr | None = Field(
        None,
        description="Elasticsearch API key: `id:key`, or the base64 `encoded` value the "
        "create-API-key call returns (use `${ENV_VAR}`). Not with `http_user`.",
    )
    tls_verify: bool = Field(True, description="Verify the server certificate of `https` hosts.")
    tls_ca_file: str | None = Field(
        None, description="CA bundle (PEM) to verify `https` hosts with (default: system CAs)."
    )
    tls_cert_file: str | None = Field(None, description="Client certificate (PEM), for mTLS.")
    tls_key_file: str | None = Field(None, description="Client certificate key (PEM), for mTLS.")
    compress: Literal["none", "gzip"] = Field(
        "none", description="Compress request bodies (`gzip`: less network, more sink CPU)."
    )
    batch_docs: int = Field(
        DEFAULT_BATCH_DOCS, ge=1, description="Most documents in one bulk request."
    )
    batch_bytes: ByteSize = Field(
        DEFAULT_BATCH_BYTES,
        description="Most body bytes in one bulk request (keep it under the cluster's "
        "`http.max_content_length`, 100mb by default). A larger single document goes alone.",
    )
    workers: int = Field(
        DEFAULT_WORKERS,
        ge=1,
        le=64,
        description="Bulk requests in flight at once per sink process (and HTTP connections "
        "kept per host). A sink batch larger than one request is sent as parallel requests.",
    )
    timeout_s: float = Field(
        DEFAULT_TIMEOUT_S, gt=0, description="Time to wait for a bulk response; then retried."
    )
    connect_timeout_s: float = Field(DEFAULT_CONNECT_TIMEOUT_S, gt=0,
                                     description="Time to wait for a TCP/TLS connection.")
    retry_backoff_ms: int = Field(
        DEFAULT_RETRY_BACKOFF_MS, ge=1,
        description="First delay before retrying failed items (doubles per attempt, jittered).",
    )
    retry_backoff_max_ms: int = Field(
        DEFAULT_RETRY_BACKOFF_MAX_MS, ge=1,
        description="Longest delay between retries. Items are retried until delivered: a "
        "long outage holds the entries pending (backpressure), nothing is dropped.",
    )
    host_cooldown_s: float = Field(
        DEFAULT_HOST_COOLDOWN_S, ge=0, description="How long a failed host is skipped."
    )

    @field_validator("hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            parts = urlsplit(host)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"host {host!r} must be a URL like http://es-1:9200 or https://es-1:9200"
                )
            if parts.password or parts.username:
                raise ValueError(
                    f"host {parts.hostname!r} carries credentials in the URL; use http_user "
                    "and http_passwd (or api_key) so they stay out of logs"
                )
        return [h.rstrip("/") for h in hosts]

    @model_validator(mode="after")
    def _check_combinations(self) -> ElasticsearchOutputOptions:
        if self.index is not None and self.data_stream is not None:
            raise ValueError("set either index or data_stream, not both")
        if self.api_key is not None and self.http_user is not None:
            raise ValueError("set either api_key or http_user/http_passwd, not both")
        if (self.http_user is None) != (self.http_passwd is None):
            raise ValueError("http_user and http_passwd go together")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.retry_backoff_max_ms < self.retry_backoff_ms:
            raise ValueError("retry_backoff_max_ms must be >= retry_backoff_ms")
        return self

    @property
    def target(self) -> str:
        """The index (or data stream) name template in effect."""
        return self.data_stream or self.index or DEFAULT_INDEX
