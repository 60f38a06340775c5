"""Where followed files start: generations and offsets, from Redis or the local checkpoint.

Redis is authoritative (``tr:{pN}:offsets`` for offsets, ``tr:{pN}:gens`` for truncation
generations, see :mod:`edge_agent.identity`); the local checkpoint stands in where Redis
has nothing (first run, or Redis lost its data). New generations are written to Redis
before any batch of them can be committed, and into the local checkpoint on the same pass.

A stored offset is trusted only while the file still holds, just before the offset the
local checkpoint recorded, the bytes read there (:func:`edge_agent.identity.has_end`): a
file deleted while the agent was not looking and replaced on the same inode with the same
first line, or truncated and regrown past the offset, has the same identity but other
bytes, and gets the next generation from byte 0 instead of skipping its head.
"""

from __future__ import annotations

import logging
import os
import time

import redis

from tailrace.keys import Keys
from tailrace.logs import event

from .checkpoint import Checkpoint
from .followed import TailedFile
from .identity import has_end, identity_key, resume_point
from .tail import Start

__all__ = ["Starter"]

log = logging.getLogger(__name__)

_SEEN_FIELD = "agent-seen:{agent}"  # tr:meta field: this agent has started before
# TailedFile.restart values after which a file's content starts again at byte 0 (the next
# generation); "rewritten" (another first line) is another base identity instead.
_NEW_CONTENT = ("truncated", "replaced")


class Starter:
    """Places files for the agent loop (a few Redis round trips per batch of files): where
    each starts, as :class:`~.tail.Start` s the input applies (:meth:`.TailInput.begin`);
    it never calls into the input.

    ``changed`` turns True when generations changed: the caller saves the checkpoint soon.
    """

    def __init__(self, keys: Keys, checkpoint: Checkpoint, agent_id: str,
                 had_checkpoint: bool) -> None:
        self.keys = keys
        self.checkpoint = checkpoint
        self.agent_id = agent_id
        self.had_checkpoint = had_checkpoint
        self.fresh: bool | None = None  # the very first start of this agent (decided once)
        self.changed = False

    def first_start(self, client: redis.Redis) -> bool:
        """Whether this agent never ran before (then files present now may start at their
        end); remembered locally (checkpoint file) and in Redis (``tr:meta``)."""
        if self.fresh is None:
            field = _SEEN_FIELD.format(agent=self.agent_id)
            seen = bool(client.hsetnx(self.keys.meta(), field, int(time.time())) == 0)
            self.fresh = not (seen or self.had_checkpoint)
        return self.fresh

    def start(self, client: redis.Redis, files: list[TailedFile], *, input_id: str,
              read_from_head: bool) -> list[Start]:
        """Find each file's generation and committed offset (Redis, else the local
        checkpoint), persist new generations; returns where each starts.

        Raises:
            redis.exceptions.ConnectionError (and the other broker errors): retry later;
            files not started stay waiting.
        """
        keys = self.keys
        pipe = client.pipeline(transaction=False)
        for tf in files:
            pipe.hget(keys.generations(tf.partition), tf.ident.base)
        stored_gens = pipe.execute()
        gens = [max(int(g or 0), self.checkpoint.generation(tf.ident.base),
                    tf.ident.generation if tf.restart in _NEW_CONTENT else 0)
                for tf, g in zip(files, stored_gens, strict=True)]
        pipe = client.pipeline(transaction=False)
        for tf, gen in zip(files, gens, strict=True):
            pipe.hget(keys.offsets(tf.partition), identity_key(tf.ident.base, gen))
        stored = pipe.execute()
        plans: list[tuple[TailedFile, int, int | None, bool]] = []
        bumps = client.pipeline(transaction=False)
        for tf, gen, value, g in zip(files, gens, stored, stored_gens, strict=True):
            committed = int(value) if value is not None else None
            entry = self.checkpoint.entry(identity_key(tf.ident.base, gen))
            local = entry.offset if entry is not None else None
            new_content = tf.restart in _NEW_CONTENT
            replaced = False
            if (not new_content and entry is not None
                    and not has_end(tf.fd, entry.offset, entry.crc)):
                new_content = replaced = True
                event(log, logging.WARNING, "tail_file_replaced",
                      f"{tf.path} does not hold the bytes read before its offset "
                      f"{entry.offset}: another file on the same inode with the same first "
                      "line, or truncated and regrown while not followed; it gets a new "
                      "identity and is read from its start",
                      input=input_id, partition=tf.partition,
                      file=identity_key(tf.ident.base, gen))
            new_gen, offset = resume_point(os.fstat(tf.fd).st_size, gen, committed, local,
                                           new_content)
            if new_gen != int(g or 0):
                bumps.hset(keys.generations(tf.partition), tf.ident.base, new_gen)
                self.checkpoint.set_generation(tf.ident.base, new_gen)
            plans.append((tf, new_gen, offset, replaced))
        if len(bumps):
            bumps.execute()  # before any batch of the new generation can be committed
            self.changed = True
        fresh = bool(self.first_start(client))
        return [Start(tf, gen, offset,
                      fresh and tf.initial and tf.restart is None and not read_from_head,
                      replaced=replaced)
                for tf, gen, offset, replaced in plans]

    def resume(self, client: redis.Redis, files: list[TailedFile], *,
               input_id: str) -> tuple[list[Start], list[TailedFile]]:
        """Start rotated siblings found at start-up (:mod:`edge_agent.recovery`) under the
        identity they finish (``tf.ident.pinned``), at its committed offset: Redis's, else the
        local checkpoint's, which recovery already checked against the file's bytes. The
        generation is the checkpointed one, never a newer one: the file at the original path
        may have moved the same base identity on (copytruncate keeping the first line).

        Returns:
            where each starts, and the files whose claim did not hold (reported here; the
            agent has the input's table drop them: :meth:`.FileTable.drop_recovered`).

        Raises:
            redis.exceptions.ConnectionError (and the other broker errors): retry later.
        """
        starts: list[Start] = []
        lost: list[TailedFile] = []
        pipe = client.pipeline(transaction=False)
        for tf in files:
            assert tf.ident.pinned is not None
            pipe.hget(self.keys.offsets(tf.partition), identity_key(tf.ident.base,
                                                                    tf.ident.pinned))
        for tf, value in zip(files, pipe.execute(), strict=True):
            gen = tf.ident.take_pin()
            identity = identity_key(tf.ident.base, gen)
            entry = self.checkpoint.entry(identity)
            offset = int(value) if value is not None else (entry.offset if entry else 0)
            size = os.fstat(tf.fd).st_size
            if offset > size:
                event(log, logging.WARNING, "tail_file_lost",
                      f"{tf.path}: its rotated copy {tf.real} holds {size} bytes but Redis "
                      f"has committed {offset} of it: another file after all; lines written "
                      "to the original after that offset could not be recovered",
                      input=input_id, partition=tf.partition, file=identity)
                lost.append(tf)
                continue
            starts.append(Start(tf, gen, offset, False,
                                note=f" (rotated while the agent was down, now {tf.real})"))
        return starts, lost

    def retire(self, client: redis.Redis, files: list[TailedFile]) -> None:
        """Deleted and closed: the next file with the same base identity (a reused inode
        with the same first line) is a new generation, read from byte 0."""
        pipe = client.pipeline(transaction=False)
        for tf in files:
            gen = max(tf.ident.generation, self.checkpoint.generation(tf.ident.base)) + 1
            pipe.hset(self.keys.generations(tf.partition), tf.ident.base, gen)
            self.checkpoint.set_generation(tf.ident.base, gen)
        pipe.execute()
        self.changed = True
