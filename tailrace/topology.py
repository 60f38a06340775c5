"""How to reach each node of the Redis deployment a broker URL names.

Three deployments (their URLs are parsed by :mod:`tailrace.brokerurl`), one client API
(redis-py's command methods): one server (or a proxy in front of one); a Redis Cluster,
where any reachable node is a seed and the client learns the slot map, follows MOVED/ASK
and fails over with the cluster; Sentinel, where the client asks the sentinels for the
service's master, and asks again whenever the connection breaks or the old master turned
replica.

Every key of one partition shares one hash tag (:mod:`tailrace.keys`), so a Lua script
always runs on one node. What differs is only *which* node: :func:`node_of` says it, and
:func:`node_client` gives a plain client for it. A single server or a Sentinel master is
the one node ``"default"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from .brokerurl import parse_broker_url
from .errors import BrokerUnavailable, PipelineError
from .urls import redact_url

__all__ = [
    "DEFAULT_NODE",
    "NodeMemory",
    "build_client",
    "describe_nodes",
    "is_cluster",
    "memory_by_node",
    "mget_any",
    "node_client",
    "node_of",
    "redact_url",
    "refresh_topology",
    "route_to",
    "set_min_replicas",
]

DEFAULT_NODE = "default"
# Client-side retries inside redis-py's cluster client (MOVED, a node going away). Ours
# wrap them: after these the error reaches the role's loop, which backs off and retries.
_CLUSTER_RETRIES = 3


def build_client(url: str, **client_kwargs: Any) -> redis.Redis:
    """A client for any broker URL.

    A cluster client is a :class:`redis.cluster.RedisCluster`: it offers the same command
    methods as :class:`redis.Redis` and is typed as one here, so code that runs the same
    commands on both needs no branches; the few places that differ ask :func:`is_cluster`.

    Raises:
        BrokerUnavailable: the URL is malformed, or no seed of a cluster answered (the
            cluster client learns the slot map when it is built).
    """
    try:
        addr = parse_broker_url(url)
    except ValueError as exc:
        raise BrokerUnavailable(f"invalid broker URL: {exc}") from None
    if addr.kind == "single":
        try:
            return redis.Redis.from_url(url, **client_kwargs)
        except ValueError as exc:
            raise BrokerUnavailable(f"invalid broker URL {redact_url(url)!r}: {exc}") from exc
    auth: dict[str, Any] = {"username": addr.username, "password": addr.password}
    if addr.tls:
        auth["ssl"] = True
    if addr.kind == "cluster":
        retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), _CLUSTER_RETRIES)
        startup = list(addr.hosts)
        extra: dict[str, Any] = {}
        parser = client_kwargs.pop("parser_class", None)
        if parser is not None:
            # A cluster client hands its nodes no parser; given a seed as a URL, it builds
            # their pools with the pool class it is given, and ours passes the parser on.
            (host, port), startup = startup[0], startup[1:]
            extra = {"url": f"{'rediss' if addr.tls else 'redis'}://{host}:{port}",
                     "connection_pool_class": _pool_with(parser)}
        try:
            node: Any = ClusterNode
            client = RedisCluster(
                startup_nodes=[node(h, p) for h, p in startup], retry=retry,
                require_full_coverage=True, **auth, **extra, **client_kwargs)
        except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException,
                OSError) as exc:
            seeds = ", ".join(f"{h}:{p}" for h, p in addr.hosts)
            raise BrokerUnavailable(
                f"no node of the Redis Cluster answered (seeds {seeds}): {exc}") from exc
        return cast(redis.Redis, client)
    sentinel_kwargs = {k: v for k, v in client_kwargs.items() if k.startswith("socket_")}
    if "sentinel_password" in addr.options:
        sentinel_kwargs["password"] = addr.options["sentinel_password"]
    if "sentinel_username" in addr.options:
        sentinel_kwargs["username"] = addr.options["sentinel_username"]
    make: Any = Sentinel
    sentinel = make(list(addr.hosts), sentinel_kwargs=sentinel_kwargs, **auth)
    return cast(redis.Redis, sentinel.master_for(addr.service, db=addr.db, **client_kwargs))


def _pool_with(parser: type) -> type[redis.ConnectionPool]:
    """A connection pool class whose connections parse replies with ``parser``."""

    class _Pool(redis.ConnectionPool):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**{**kwargs, "parser_class": parser})

    return _Pool


def is_cluster(client: Any) -> bool:
    """True for a Redis Cluster client (and its pipelines)."""
    return isinstance(client, RedisCluster)


def node_of(client: redis.Redis, key: str) -> str:
    """Name (``host:port``) of the node serving ``key`` now; ``"default"`` off-cluster."""
    if not is_cluster(client):
        return DEFAULT_NODE
    rc: Any = client
    return str(rc.get_node_from_key(key).name)


def route_to(client: redis.Redis, key: str) -> dict[str, Any]:
    """Keyword arguments that send a keyless command (``WAIT``) to ``key``'s node."""
    if not is_cluster(client):
        return {}
    rc: Any = client
    return {"target_nodes": rc.get_node_from_key(key)}


def node_client(client: redis.Redis, node: str) -> redis.Redis:
    """A plain client for one node (its own connection pool), from :func:`node_of`'s name.

    Raises:
        BrokerUnavailable: the cluster no longer has a node of that name (it left after a
            failover); the caller re-reads the topology.
    """
    if not is_cluster(client):
        return client
    rc: Any = client
    found = rc.get_node(node_name=node)
    if found is None:
        raise BrokerUnavailable(f"Redis Cluster node {node} is no longer part of the cluster")
    return cast(redis.Redis, rc.get_redis_connection(found))


def refresh_topology(client: redis.Redis) -> None:
    """Make a cluster client re-read the slot map now (after a node failed or moved)."""
    if is_cluster(client):
        cast(RedisCluster, client).nodes_manager.initialize()


def mget_any(client: redis.Redis, keys: list[Any]) -> list[Any]:
    """MGET of keys that may live on different cluster nodes (one round trip per slot)."""
    if not keys:
        return []
    if is_cluster(client):
        return list(cast(RedisCluster, client).mget_nonatomic(keys))
    return list(client.mget(keys))


@dataclass(frozen=True)
class NodeMemory:
    """Memory of one master: ``used`` and its ``maxmemory`` (0 = none), in bytes."""

    node: str
    used: int
    maxmemory: int


def memory_by_node(client: redis.Redis) -> list[NodeMemory]:
    """``INFO memory`` of every master (one node off-cluster), in one call per node."""
    if is_cluster(client):
        infos = _primaries_info(client, "memory")
        return [NodeMemory(name, int(i.get("used_memory", 0)), int(i.get("maxmemory", 0)))
                for name, i in sorted(infos.items())]
    info = client.info("memory")
    return [NodeMemory(_single_name(client), int(info.get("used_memory", 0)),
                       int(info.get("maxmemory", 0)))]


def _primaries_info(client: redis.Redis, section: str | None = None
                    ) -> dict[str, dict[str, Any]]:
    """``INFO`` of every master of a cluster, by node name (one call per node).

    A master that does not answer makes the client re-read the slot map once (it may have
    failed over: its replica is the master now) before the error is raised.
    """
    rc: Any = client
    for attempt in (1, 2):
        out = {}
        try:
            for node in rc.get_primaries():
                node_client = rc.get_redis_connection(node)
                out[str(node.name)] = node_client.info(section) if section else node_client.info()
            return out
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            if attempt == 2:
                raise
            rc.nodes_manager.initialize()
    raise AssertionError("unreachable")


def _single_name(client: redis.Redis) -> str:
    """``host:port`` (or the socket path) of a single server or a Sentinel's master."""
    pool = client.connection_pool
    master = getattr(pool, "get_master_address", None)
    if master is not None:
        try:
            host, port = master()
            return f"{host}:{port}"
        except (redis.exceptions.RedisError, OSError):
            return DEFAULT_NODE
    kw = pool.connection_kwargs
    if "path" in kw:
        return str(kw["path"])
    return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"


def describe_nodes(client: redis.Redis, keys_by_partition: dict[int, str]) -> list[dict[str, Any]]:
    """The masters and which partitions each serves, for ``tailrace status``.

    Args:
        keys_by_partition: one key of each partition (all of a partition's keys share a
            slot, so one says where the partition lives).

    Returns:
        ``[{"node", "role", "partitions", "used_memory", "maxmemory", "replicas"}]``,
        one per master, sorted by node name.
    """
    by_node: dict[str, list[int]] = {}
    single = not is_cluster(client)
    for p, key in sorted(keys_by_partition.items()):
        name = _single_name(client) if single else node_of(client, key)
        by_node.setdefault(name, []).append(p)
    if single:
        infos = {next(iter(by_node), _single_name(client)): client.info()}
    else:
        infos = _primaries_info(client)
    out = []
    for name in sorted(set(by_node) | set(infos)):
        info = infos.get(name, {})
        out.append({
            "node": name,
            "role": info.get("role", "?"),
            "partitions": by_node.get(name, []),
            "used_memory": int(info.get("used_memory", 0)),
            "maxmemory": int(info.get("maxmemory", 0)),
            "replicas": int(info.get("connected_slaves", 0)),
        })
    return out


def _all_nodes(client: redis.Redis) -> list[tuple[str, redis.Redis, bool]]:
    """(name, client, owned) for every data node: masters and replicas.

    ``owned`` clients were opened here for the call and must be closed by the caller.
    """
    if is_cluster(client):
        rc: Any = client
        return [(str(n.name), cast(redis.Redis, rc.get_redis_connection(n)), False)
                for n in rc.get_nodes()]
    pool: Any = client.connection_pool
    nodes = [(_single_name(client), client, False)]
    manager = getattr(pool, "sentinel_manager", None)
    if manager is not None:
        kw = pool.connection_kwargs
        for host, port in manager.discover_slaves(pool.service_name):
            replica = redis.Redis(host=host, port=port, username=kw.get("username"),
                                  password=kw.get("password"), ssl=bool(kw.get("ssl")),
                                  socket_timeout=5, socket_connect_timeout=5)
            nodes.append((f"{host}:{port}", replica, True))
    return nodes


def set_min_replicas(client: redis.Redis, replicas: int, max_lag_s: int) -> list[str]:
    """``CONFIG SET min-replicas-to-write``/``min-replicas-max-lag`` on every data node.

    Replicas get it too, so a replica promoted by a failover enforces it at once. Nodes
    added later do not: put the same lines in every node's redis.conf.

    Returns:
        the names of the nodes configured.

    Raises:
        PipelineError: a node refused ``CONFIG SET`` (renamed or forbidden by ACL, as on
            many managed services); the message says what to set instead.
        any of the client's connection errors when a node cannot be reached.
    """
    done = []
    for name, node, owned in _all_nodes(client):
        try:
            node.config_set("min-replicas-to-write", replicas)
            node.config_set("min-replicas-max-lag", max_lag_s)
            done.append(name)
        except redis.exceptions.ResponseError as exc:
            raise PipelineError(
                f"cannot set min-replicas-to-write on Redis node {name}: {exc}. Set "
                f"'min-replicas-to-write {replicas}' and 'min-replicas-max-lag {max_lag_s}' in "
                "the redis.conf of every node and remove "
                "service.replication.min_replicas_to_write from the config") from None
        finally:
            if owned:
                node.close()
    return done
