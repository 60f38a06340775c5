"""Sending Lua script calls: one at a time, or batched per node with NOSCRIPT and WAIT.

The plumbing under :class:`tailrace.scriptcalls.Scripts`: a :class:`ScriptBatch` sends
calls that go out together in one round trip per node (reloading scripts a node lost, and
``WAIT``-ing for replicas through a :class:`WaitPolicy`); :func:`call` runs one call now.
Both give error replies tailrace's classes (:func:`~tailrace.broker.classify_reply`: a
write refused by a full Redis is a :class:`~tailrace.broker.BrokerFullError` on 6.2 and 7),
whichever client they are sent on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script

from .broker import BROKER_ERRORS, NotReplicated, classify_reply
from .errors import BrokerUnavailable
from .topology import DEFAULT_NODE, is_cluster, node_of, route_to

__all__ = ["Appended", "ScriptBatch", "WaitPolicy", "call", "raise_wait_error"]


@dataclass(frozen=True, slots=True)
class Appended:
    """The reply of a call whose entries were appended beside it: the script's own reply
    and the entries' ids (written, unless the script took them back)."""

    reply: Any
    entry_ids: list[bytes]


@dataclass(frozen=True, slots=True)
class WaitPolicy:
    """Synchronous replication for commits: ``WAIT replicas timeout_ms`` after each.

    ``replicas`` 0 (the default) leaves replication asynchronous: a failover may lose the
    last commits the old master had not yet sent (docs/scaling.md says what that costs).
    """

    replicas: int = 0
    timeout_ms: int = 1000


class ScriptBatch:
    """Script calls sent together: one round trip per node, in the order they were added.

    Built by :meth:`Scripts.batch`; the wrappers that accept ``client=`` queue into it. On
    a Redis Cluster each call goes to the node of its keys (all of one partition), and the
    nodes are written to before any is read. A node that lost the scripts (restarted,
    promoted replica) answers NOSCRIPT: the scripts are loaded again and those calls, which
    did not run, are sent once more. With a :class:`WaitPolicy`, a ``WAIT`` follows the
    calls on each node's connection.
    """

    def __init__(self, client: redis.Redis, wait: WaitPolicy) -> None:
        self.client = client
        self.wait = wait
        self._calls: list[tuple[Script, list[str], list[Any]]] = []
        # call index -> (stream, XADD fields of each entry): appended in a MULTI just
        # before that call
        self._appends: dict[int, tuple[str, list[list[Any]]]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, script: Script, keys: list[str], args: list[Any],
            append: tuple[str, list[list[Any]]] | None = None) -> None:
        """Queue a call; with ``append`` (stream, each entry's fields) those entries are
        XADDed first, in one MULTI with the call (sent as EVAL), so their bytes stay out of
        Lua. The script must take them back when it refuses (see
        :data:`tailrace.scripts.PRODUCE`). Off-cluster only: a cluster pipeline cannot route
        MULTI."""
        if append is not None:
            self._appends[len(self._calls)] = append
        self._calls.append((script, keys, args))

    def execute(self, *, partial: bool = False) -> list[Any]:
        """Run the queued calls (the batch is empty afterwards).

        Args:
            partial: return a broker error in the place of each call it hit (a cluster
                node that is down) instead of raising it, so the replies of the nodes that
                answered can be used.

        Returns:
            each call's reply in order; a call the server refused for its own reasons
            (e.g. ``OOM``) has its :class:`redis.exceptions.ResponseError` in its place.

        Raises:
            any of :data:`BROKER_ERRORS` when a node cannot be reached (unless
            ``partial``), and :class:`NotReplicated` when ``WAIT`` saw too few replicas.
            Some calls may have run; every script is idempotent, so the caller simply
            retries the batch.
        """
        calls, self._calls = self._calls, []
        appends, self._appends = self._appends, {}
        if appends:
            return self._send_appending(calls, appends, partial)
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _attempt in range(3):
            try:
                replies = self._send([calls[i] for i in todo])
            except BROKER_ERRORS:
                if not partial or not is_cluster(self.client):
                    raise
                replies = self._send_per_node([calls[i] for i in todo])
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                reply = classify_reply(reply)  # whoever built the client
                if isinstance(reply, redis.exceptions.NoScriptError):
                    missing.append(i)
                elif (isinstance(reply, BROKER_ERRORS) and not partial
                      and not isinstance(reply, redis.exceptions.OutOfMemoryError)):
                    raise reply  # (a full node refuses its calls only: see execute's Returns)
                else:
                    results[i] = reply
            if not missing:
                return results
            for script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
                script.sha = self.client.script_load(script.script)  # every master
            todo = missing
        raise BrokerUnavailable("the broker keeps answering NOSCRIPT after loading the scripts "
                                "(is a proxy spreading one connection over several servers?)")

    def _send_appending(self, calls: list[tuple[Script, list[str], list[Any]]],
                        appends: dict[int, tuple[str, list[list[Any]]]],
                        partial: bool) -> list[Any]:
        """One round trip: each appending call as MULTI · XADD · EVAL · EXEC, the others as
        EVAL too (no NOSCRIPT to handle), then the WAIT of the policy. An appending call's
        reply is an :class:`Appended` (the script's reply; a script error in it stays an
        exception there); one refused when queued (``OOM``: nothing of it ran) has that
        error instead."""
        pipe: Any = self.client.pipeline(transaction=False)
        for command in self._appending_commands(calls, appends):
            pipe.execute_command(*command)
        if self.wait.replicas:
            pipe.execute_command("WAIT", self.wait.replicas, self.wait.timeout_ms)
        out = list(pipe.execute(raise_on_error=False))
        if self.wait.replicas:
            self._check_acked(out.pop(), DEFAULT_NODE)
        return self._appending_results(calls, appends, out, partial)

    def send(self) -> Callable[[], list[Any]]:
        """Send the queued calls now on a connection of their own, without waiting; the
        function returned reads their replies (once) and gives what :meth:`execute` would.

        For a commit left in flight while the caller works on (``overlap_commits``):
        off-cluster, no :class:`WaitPolicy`, every call appending (no NOSCRIPT to handle).
        Until the replies are read, the connection is out of the pool.

        Raises (here or from the function): any of :data:`BROKER_ERRORS`; the calls may
        have run (every script is idempotent: the caller retries after a resync).
        """
        calls, self._calls = self._calls, []
        appends, self._appends = self._appends, {}
        if self.wait.replicas or len(appends) != len(calls):
            raise TypeError("send() takes appending calls only, without a WaitPolicy")
        commands = self._appending_commands(calls, appends)
        client: Any = self.client
        pool = client.connection_pool
        conn = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_commands(commands))
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise

        def replies() -> list[Any]:
            out: list[Any] = []
            try:
                for command in commands:
                    try:
                        out.append(client.parse_response(conn, command[0]))
                    except redis.exceptions.ResponseError as exc:
                        out.append(exc)
            except BaseException:
                conn.disconnect()  # replies left unread: the connection cannot be reused
                raise
            finally:
                pool.release(conn)
            return self._appending_results(calls, appends, out, False)

        return replies

    def _appending_commands(self, calls: list[tuple[Script, list[str], list[Any]]],
                            appends: dict[int, tuple[str, list[list[Any]]]]
                            ) -> list[tuple[Any, ...]]:
        """Each appending call as MULTI · XADD · EVAL · EXEC, the others as EVAL."""
        if is_cluster(self.client):
            raise TypeError("appending calls are off-cluster only")
        commands: list[tuple[Any, ...]] = []
        for i, (script, keys, args) in enumerate(calls):
            append = appends.get(i)
            if append is not None:
                commands.append(("MULTI",))
                commands.extend(("XADD", append[0], "*", *fields) for fields in append[1])
            commands.append(("EVAL", script.script, len(keys), *keys, *args))
            if append is not None:
                commands.append(("EXEC",))
        return commands

    def _appending_results(self, calls: list[tuple[Script, list[str], list[Any]]],
                           appends: dict[int, tuple[str, list[list[Any]]]], out: list[Any],
                           partial: bool) -> list[Any]:
        """The replies of :meth:`_appending_commands` grouped back into one per call."""
        results: list[Any] = []
        at = 0
        for i in range(len(calls)):
            if i not in appends:
                results.append(self._reply(out[at], partial))
                at += 1
                continue
            n = len(appends[i][1])
            queued, done = out[at: at + n + 2], out[at + n + 2]
            at += n + 3
            if isinstance(done, BaseException):  # EXECABORT: say why it was refused
                refused = next((r for r in queued if isinstance(r, BaseException)), done)
                results.append(self._reply(refused, partial))
            else:
                results.append(Appended(self._reply(done[-1], partial), list(done[:-1])))
        return results

    @staticmethod
    def _reply(reply: Any, partial: bool) -> Any:
        """A reply as :meth:`execute` returns it: classified, a broker error raised (unless
        ``partial``; a full node's refusal never: see execute's Returns)."""
        reply = classify_reply(reply) if isinstance(reply, BaseException) else reply
        if isinstance(reply, BROKER_ERRORS) and not partial and not isinstance(
                reply, redis.exceptions.OutOfMemoryError):
            raise reply
        return reply

    def _check_acked(self, acked: Any, node: str) -> None:
        """Raise unless ``WAIT`` on ``node`` saw the replicas the policy asks for."""
        raise_wait_error(acked, f"node {node}")
        if int(acked) < self.wait.replicas:
            where = f" on node {node}" if node != DEFAULT_NODE else ""
            raise NotReplicated(
                f"commit not confirmed by {self.wait.replicas} replica(s) within "
                f"{self.wait.timeout_ms} ms{where} (only {int(acked)} acknowledged): "
                "retrying; check the replicas' link and lag (INFO replication)")

    def _send_per_node(self, calls: list[tuple[Script, list[str], list[Any]]]) -> list[Any]:
        """Like :meth:`_send`, one node at a time: a node that fails fails only its calls."""
        by_node: dict[str, list[int]] = {}
        for i, (_script, keys, _args) in enumerate(calls):
            by_node.setdefault(node_of(self.client, keys[0]), []).append(i)
        replies: list[Any] = [None] * len(calls)
        for idx in by_node.values():
            try:
                got = self._send([calls[i] for i in idx])
            except BROKER_ERRORS as exc:
                got = [exc] * len(idx)
            for i, reply in zip(idx, got, strict=True):
                replies[i] = reply
        return replies

    def _send(self, calls: list[tuple[Script, list[str], list[Any]]]) -> list[Any]:
        pipe: Any = self.client.pipeline(transaction=False)
        waits: dict[str, str] = {}  # node -> a key on it
        for script, keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            if self.wait.replicas:
                waits.setdefault(node_of(self.client, keys[0]), keys[0])
        for _node, key in waits.items():
            pipe.execute_command("WAIT", self.wait.replicas, self.wait.timeout_ms,
                                 **route_to(self.client, key))
        out = list(pipe.execute(raise_on_error=False))
        replies, acked = out[: len(calls)], out[len(calls) :]
        for node, n in zip(waits, acked, strict=True):
            self._check_acked(n, node)
        return replies


def call(script: Script, keys: list[str], args: list[Any], client: Any = None) -> Any:
    """Run one script now (EVALSHA, loaded again on NOSCRIPT by redis-py)."""
    try:
        return script(keys=keys, args=args, client=client)
    except redis.exceptions.ResponseError as exc:
        raise classify_reply(exc) from None


def raise_wait_error(reply: Any, where: str) -> None:
    """Raise an error reply of a WAIT (or of its probe write) as a broker error.

    WAIT sent to a node that became a replica in a failover ("WAIT cannot be used with
    replica instances") is a moment of the topology changing, not a bug: the loop retries
    once the client has the new slot map.
    """
    if not isinstance(reply, BaseException):
        return
    if isinstance(reply, BROKER_ERRORS):
        raise reply
    raise BrokerUnavailable(f"confirming writes on {where} failed: {reply} (a failover in "
                            "progress?); retrying with the new topology")
