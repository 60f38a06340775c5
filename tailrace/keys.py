"""Every Redis key name tailrace uses, built (and parsed) here and nowhere else.

All keys of one partition share the Redis Cluster hash tag ``{pN}``, so a Lua script can
touch a partition's streams, offsets, leases and checkpoints in one slot::

    tr:{p3}:raw              stream: raw line batches from agents
    tr:{p3}:out              stream: processed record batches for the sinks
    tr:{p3}:dlq              stream: dead letters (any stage)
    tr:{p3}:dlqdone          hash:   dead letter id -> where it was replayed (once each)
    tr:{p3}:offsets          hash:   file identity -> committed byte offset (agent producer)
    tr:{p3}:gens             hash:   base file identity -> truncation generation (agent)
    tr:{p3}:lease:GROUP      string: "worker:token", PX ttl
    tr:{p3}:epoch:GROUP      int:    fencing token counter, only grows
    tr:{p3}:ckpt:GROUP       hash:   sink checkpoint (e.g. file path -> committed size)
    tr:{p3}:probe            string: written (short TTL) to WAIT for replicas of the node

Keys that span partitions carry no partition tag::

    tr:members:GROUP         zset:   worker id -> last heartbeat (ms)
    tr:outlease:GROUP        string: single-writer output lease ("worker:token")
    tr:worker:ID             string: published lifecycle record of one worker (TTL)
    tr:meta                  hash:   pipeline facts (partition count)
    tr:reload                int:    reload generation (``tailrace reload`` bumps it)
    tr:replay:RUN            hash:   progress of one ``tailrace dlq replay`` run
    rq:queue:tr-KIND         RQ's own keys for the pipeline's job queues (Keys.queue)

Keys shared by every worker of a filter (one hash tag per filter, so one script call can
touch all of a filter's subjects)::

    tr:{throttle:FILTER}:SUBJECT  hash: window pane -> records let through, "first" pane
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_PREFIX",
    "PROCESSORS_GROUP",
    "Keys",
    "sink_group",
    "sink_output_name",
]

DEFAULT_PREFIX = "tr"
PROCESSORS_GROUP = "processors"
_SINK_GROUP_PREFIX = "sink:"
_PARTITION_RE = re.compile(r"\{p(\d+)\}")


def sink_group(output_name: str) -> str:
    """Consumer group name of the sink that delivers output ``output_name``."""
    return _SINK_GROUP_PREFIX + output_name


def sink_output_name(group: str) -> str | None:
    """Inverse of :func:`sink_group`; ``None`` for a group that is not a sink's."""
    if group.startswith(_SINK_GROUP_PREFIX):
        return group[len(_SINK_GROUP_PREFIX) :]
    return None


@dataclass(frozen=True)
class Keys:
    """Key builder for one pipeline (one prefix)."""

    prefix: str = DEFAULT_PREFIX

    # -- per partition (hash-tagged) -------------------------------------------------
    def _p(self, partition: int, kind: str) -> str:
        return f"{self.prefix}:{{p{partition}}}:{kind}"

    def raw(self, partition: int) -> str:
        return self._p(partition, "raw")

    def out(self, partition: int) -> str:
        return self._p(partition, "out")

    def dlq(self, partition: int) -> str:
        return self._p(partition, "dlq")

    def dlq_replayed(self, partition: int) -> str:
        """Dead letters already replayed: entry id -> target stream, new id, address."""
        return self._p(partition, "dlqdone")

    def offsets(self, partition: int) -> str:
        return self._p(partition, "offsets")

    def generations(self, partition: int) -> str:
        """Truncation generation of each file (edge_agent.identity) whose base maps here."""
        return self._p(partition, "gens")

    def lease(self, partition: int, group: str) -> str:
        return self._p(partition, f"lease:{group}")

    def epoch(self, partition: int, group: str) -> str:
        return self._p(partition, f"epoch:{group}")

    def checkpoint(self, partition: int, group: str) -> str:
        return self._p(partition, f"ckpt:{group}")

    def probe(self, partition: int) -> str:
        """A throwaway key in the partition's slot: a write to it, then ``WAIT``, confirms
        that everything the node wrote before has reached its replicas."""
        return self._p(partition, "probe")

    def stream(self, stage: str, partition: int) -> str:
        """The stream a consumer of ``stage`` (``raw`` or ``out``) reads."""
        if stage not in ("raw", "out", "dlq"):
            raise ValueError(f"unknown stream stage {stage!r}")
        return self._p(partition, stage)

    # -- pipeline-wide ----------------------------------------------------------------
    def members(self, group: str) -> str:
        return f"{self.prefix}:members:{group}"

    def output_lease(self, group: str) -> str:
        return f"{self.prefix}:outlease:{group}"

    def worker(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    def worker_pattern(self) -> str:
        return f"{self.prefix}:worker:*"

    def meta(self) -> str:
        return f"{self.prefix}:meta"

    def queue(self, kind: str) -> str:
        """Name of an RQ queue of this pipeline (``backfill``, ``replay``): ``tr-backfill``.

        RQ keeps its own keys (``rq:queue:<name>``, ``rq:job:<id>``) in the same Redis; the
        queue name carries the prefix so two pipelines on one Redis do not share jobs.
        """
        return f"{self.prefix}-{kind}"

    def replay_run(self, run: str) -> str:
        """Progress counters of dead-letter replay run ``run`` (its jobs update them)."""
        return f"{self.prefix}:replay:{run}"

    def replay_run_pattern(self) -> str:
        return f"{self.prefix}:replay:*"

    def reload(self) -> str:
        """Generation counter bumped by ``tailrace reload``; workers reload when it moves."""
        return f"{self.prefix}:reload"

    def throttle(self, scope: str, subject: str) -> str:
        """Shared rate-limit window of ``subject`` (a tag or key value) in filter ``scope``."""
        return f"{self.prefix}:{{throttle:{scope}}}:{subject}"

    # -- parsers ----------------------------------------------------------------------
    def partition_of(self, key: str | bytes) -> int:
        """The partition number of a per-partition key (``tr:{p3}:raw`` -> 3)."""
        text = key.decode() if isinstance(key, bytes) else key
        m = _PARTITION_RE.search(text)
        if m is None or not text.startswith(self.prefix + ":"):
            raise ValueError(f"{text!r} is not a per-partition key of prefix {self.prefix!r}")
        return int(m.group(1))

    def worker_id_of(self, key: str | bytes) -> str:
        """Inverse of :meth:`worker`."""
        text = key.decode() if isinstance(key, bytes) else key
        head = f"{self.prefix}:worker:"
        if not text.startswith(head):
            raise ValueError(f"{text!r} is not a worker key of prefix {self.prefix!r}")
        return text[len(head) :]
