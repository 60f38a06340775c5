# syntax=docker/dockerfile:1
# One image for every tailrace role: the role is the command.
#
#   docker build -t tailrace:dev .
#   docker run --rm tailrace:dev --help
#   docker run --rm -v $PWD/compose/tailrace.yaml:/etc/tailrace/tailrace.yaml:ro \
#       tailrace:dev config check -c /etc/tailrace/tailrace.yaml
#   docker run ... tailrace:dev agent | processor | sink --output es | generate DIR | status
#
# BASE_IMAGE may name another Debian-based Python image (>= 3.11), e.g. a mirror of it or
# python:3.12-slim-bookworm: the builder and the runtime stage use the same one. A plain Debian
# with python3, python3-venv and python3-pip works too (no `python` command, pip refuses to install
# into the system's Python): only `python3` is called, and tailrace goes into a venv.
# Without a registry: compose/README.md ("No registry") builds such a base with debootstrap.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- builder: the project and every dependency as wheels ---------------------------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tailrace/ tailrace/
COPY edge_agent/ edge_agent/
COPY processors/ processors/
COPY sinks/ sinks/
# pip's download cache outlives the build, so a rebuild after a code change fetches nothing
# again (unless a proxy strips the index's Cache-Control, as on the development machines).
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m pip wheel --wheel-dir /wheels .

# ---- runtime: slim base, the wheels installed offline, no compilers ----------------------
FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tailrace" \
      org.opencontainers.image.description="Log pipeline on Redis Streams: edge agent, processors and sinks with exactly-once delivery" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# tini is PID 1: it forwards SIGTERM to tailrace (which drains, commits and releases its
# leases) and reaps children. A fixed non-root user owns the state and output folders, so
# named volumes mounted there start out writable.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tailrace \
 && useradd --system --uid 10001 --gid tailrace --no-create-home \
        --home-dir /var/lib/tailrace --shell /usr/sbin/nologin tailrace \
 && install -d -o tailrace -g tailrace /var/lib/tailrace /var/log/generated /srv/tailrace/out \
 && install -d /etc/tailrace

# A venv: the same on the python images and on a plain Debian (PEP 668), and plugins can be
# added with its pip.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python3 -m venv /opt/tailrace \
 && /opt/tailrace/bin/python -m pip install --no-cache-dir --no-index --find-links=/wheels tailrace \
 && /opt/tailrace/bin/tailrace --version

ENV PATH=/opt/tailrace/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TAILRACE_CONFIG=/etc/tailrace/tailrace.yaml \
    TAILRACE_HEALTH_ADDR=127.0.0.1:2020
WORKDIR /var/lib/tailrace
USER 10001:10001
# service.http: /health, /metrics (Prometheus), /api/v1/status
EXPOSE 2020
STOPSIGNAL SIGTERM
# 200 while healthy; 503 with the reason (e.g. the broker is down), printed to the health log.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import http.client as h,os,sys;c=h.HTTPConnection(os.environ.get('TAILRACE_HEALTH_ADDR','127.0.0.1:2020'),timeout=4);c.request('GET','/health');r=c.getresponse();print(r.status,r.read().decode().strip());sys.exit(r.status!=200)"]
ENTRYPOINT ["/usr/bin/tini", "--", "tailrace"]
CMD ["--help"]
