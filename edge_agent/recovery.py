"""Rotation while the agent was down: finish the rotated files from their committed offsets.

While the agent is stopped, logrotate or the kubelet may rename the file it followed
(``app.log`` -> ``app.log.1``, ``0.log`` -> ``0.log.20240101-120000``), copy and truncate it
(copytruncate), or compress the rotated file (``.gz``). The restarted agent finds the new file
at the path, but the lines written to the old one after the stop are in a file the input's
globs may not match, or exclude. So at the first start, before any file starts,
:class:`Recovery` takes every file followed at the last checkpoint save whose path now holds
another file or other bytes (or nothing), and looks in its folder for its rotated siblings,
named ``<name>.<suffix>``, ``<name>-<suffix>`` or ``<name>_<suffix>`` (whatever the input's
globs and ``exclude_path`` say):

- renamed: the same device, inode and first line, and the bytes before the offset;
- copied (copytruncate) or compressed: the same first line and the same bytes before the
  checkpointed offset (the checksum kept with it, :func:`.identity.has_end`). A ``.gz`` is
  read through gzip into an unlinked scratch file in the agent's data folder.

A match is read under the checkpointed identity from its committed offset (Redis's, else the
local one; :meth:`.Starter.resume`), to its end, then closed: its lines come once. A sibling
written after the stop that the agent never saw (the middle file of two rotations while down)
is read from its start under its own identity. A sibling holding what the agent already read
(an older rotation, a compressed copy of it) is left alone. A followed file whose rest is
nowhere (deleted, compressed by another tool) is reported, event ``tail_file_lost`` and
counter ``files_lost``: lines are never guessed.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tailrace.logs import event

from .checkpoint import Checkpoint, FileCheckpoint
from .followed import FileIdentity, TailedFile
from .identity import (
    FileId,
    base_of,
    end_checksum,
    fingerprint,
    has_end,
    identity_key,
    parse_base,
)
from .siblings import (
    Sibling,
    SiblingError,
    is_rotation_of,
    open_sibling,
    rotation_keys,
    written_since,
)
from .tail import TailInput

__all__ = ["Recovery"]

log = logging.getLogger(__name__)

# A sibling modified this long before the last checkpoint save may still hold lines written
# after it (file times are coarser than the save's clock).
NEW_SLACK_S = 1.0
MAX_SAME_HEAD_CHECKS = 64  # entries compared with one sibling of a common first line


@dataclass(slots=True)
class _Orphan:
    """A file followed at the last save whose path holds another file now (or none)."""

    identity: str
    entry: FileCheckpoint
    fid: FileId  # its device, inode and first-line checksum (from the identity)
    inp: TailInput
    folder: str
    stems: tuple[str, ...]  # file names whose rotated names are its siblings
    exact: str | None  # a sibling recorded as such (a recovered file not finished yet)
    found: str | None = None  # the sibling that finishes it
    rejected: list[str] = field(default_factory=list)  # same first line, other bytes

    @property
    def base(self) -> str:
        return base_of(self.identity)

    def owns(self, name: str) -> bool:
        """Whether a file of that name in its folder may hold its rest."""
        return name == self.exact or any(is_rotation_of(name, s) for s in self.stems)


class Recovery:
    """Runs once, at the agent's first pass, after the first scan of every input (local
    work only: the starts that read Redis follow)."""

    def __init__(self, checkpoint: Checkpoint, agent: str, scratch: Path) -> None:
        self.checkpoint = checkpoint
        self.agent = agent
        self.scratch = scratch
        # Checkpointed entries by the checksum of their file's first line: the orphans,
        # and every entry whose bytes before the offset are known (what was read before).
        self._orphans_by_head: dict[int, list[_Orphan]] = {}
        self._read_by_head: dict[int, list[FileCheckpoint]] = {}

    def run(self, inputs: list[TailInput], now: float) -> None:
        cp = self.checkpoint
        if not cp.files:
            return
        # Entries touched by the last save are exactly the files followed then (see
        # Checkpoint.touch); older ones were drained and closed before the stop.
        last_save = max(fc.updated for fc in cp.files.values())
        first = [(inp, tf) for inp in inputs for tf in inp.table.waiting_files()]
        taken = {i for i in (self._resumed_by(tf) for _inp, tf in first) if i is not None}
        orphans = self._orphans(inputs, last_save, taken)
        if not orphans:
            return
        for o in orphans:
            self._orphans_by_head.setdefault(o.fid.crc, []).append(o)
        for identity, fc in cp.files.items():
            fid = parse_base(base_of(identity))
            if fid is not None and fc.crc is not None:
                self._read_by_head.setdefault(fid.crc, []).append(fc)
        bases = {base_of(k) for k in cp.files} | set(cp.generations)
        for inp, tf in first:  # copytruncate with the rotated names matched by the globs
            if tf.ident.base in bases:
                continue
            try:
                size = inp.table.size_of(tf)
            except OSError:
                continue
            found = self._match(tf.fd, size, tf.ident.fid, tf.real)
            if found is not None:
                tf.ident.pin(found.identity, copy=True)
                _announce(found, tf.real, "copied")
        followed = {key for inp in inputs for key in inp.table.files}
        folders: dict[str, list[_Orphan]] = {}
        for o in orphans:
            folders.setdefault(o.folder, []).append(o)
        for folder, group in folders.items():
            for path, owners in _siblings(folder, group):
                self._consider(path, owners, followed, bases, last_save, now)
        for o in orphans:
            if o.found is None:
                self._report_lost(o)

    # -- which files were rotated ---------------------------------------------------------
    def _resumed_by(self, tf: TailedFile) -> str | None:
        """The identity a file of the first scan resumes (as the start will decide it)."""
        base = tf.ident.base
        identity = identity_key(base, self.checkpoint.generation(base))
        entry = self.checkpoint.entry(identity)
        if entry is None:
            return None
        try:
            size = os.fstat(tf.fd).st_size
        except OSError:
            return None
        return identity if size >= entry.offset and has_end(tf.fd, entry.offset,
                                                            entry.crc) else None

    def _orphans(self, inputs: list[TailInput], last_save: float,
                 taken: set[str]) -> list[_Orphan]:
        out = []
        for identity, fc in self.checkpoint.files.items():
            if fc.updated != last_save or identity in taken:
                continue
            fid = parse_base(base_of(identity))
            inp = next((i for i in inputs if i.table.discovery.follows(fc.path)), None)
            if fid is None or inp is None or _still_there(fc, fid):
                continue  # not ours any more (config changed), or just not opened yet
            real = fc.real or os.path.realpath(fc.path)  # a link of a v3 checkpoint
            stems = tuple(dict.fromkeys((os.path.basename(real), os.path.basename(fc.path))))
            out.append(_Orphan(identity, fc, fid, inp, os.path.dirname(real), stems,
                               os.path.basename(fc.real) if fc.real else None))
        return out

    # -- siblings -------------------------------------------------------------------------
    def _consider(self, path: str, group: list[_Orphan], followed: set[tuple[int, int]],
                  bases: set[str], last_save: float, now: float) -> None:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in followed:
            return
        since = last_save - NEW_SLACK_S
        fresh = st.st_mtime >= since
        try:  # a .gz is decompressed only when it may be the rest of one, or new
            cand = open_sibling(path, st, self.scratch,
                                lambda crc: fresh or any(o.fid.crc == crc for o in group))
        except SiblingError as exc:
            for o in group:
                o.rejected.append(f"{path} {exc}")
            return
        if cand is None:
            return
        adopted = False
        try:
            found = self._match(cand.fd, cand.size, cand.fid, path)
            if found is not None:
                tf = self._tailed(cand, found.inp, found.entry.path)
                renamed = (cand.fid.dev, cand.fid.ino) == (found.fid.dev, found.fid.ino)
                tf.ident.pin(found.identity, copy=cand.gz or not renamed)
                adopted = found.inp.table.adopt(tf, now)
                if adopted:
                    _announce(found, path, "compressed" if cand.gz
                              else "renamed" if renamed else "copied")
                else:
                    found.found = None
                    found.rejected.append(f"{path} (no descriptor left: max_open_files)")
            elif (written_since(cand, group[0].inp.opts.format, since)
                  and cand.fid.key(self.agent) not in bases and not self._already_read(cand)):
                # Written after the stop and never seen: the middle file of two rotations.
                owner = group[0]
                tf = self._tailed(cand, owner.inp, owner.entry.path)
                if cand.gz:
                    tf.ident.mark_copy()
                adopted = owner.inp.table.adopt(tf, now)
                if adopted:
                    owner.inp.count("files_recovered", 1)
                    event(log, logging.INFO, "tail_file_recovered",
                          f"{path}: rotated from {owner.entry.path} while the agent was down, "
                          "after it stopped; reading it from its start",
                          input=owner.inp.input_id, file=tf.identity)
        finally:
            if not adopted and cand.fd >= 0:
                os.close(cand.fd)
        if adopted:
            followed.add((cand.fid.dev, cand.fid.ino))

    # -- matching -------------------------------------------------------------------------
    def _match(self, fd: int, size: int, fid: FileId, path: str) -> _Orphan | None:
        """The orphan whose bytes this file holds up to the orphan's offset, if any."""
        for o in self._orphans_by_head.get(fid.crc, ()):
            if o.found is not None:
                continue
            e = o.entry
            same_inode = (fid.dev, fid.ino) == (o.fid.dev, o.fid.ino)
            try:
                ok = size >= e.offset and (has_end(fd, e.offset, e.crc) if same_inode
                                           else e.crc is not None
                                           and end_checksum(fd, e.offset) == e.crc)
            except OSError:
                ok = False
            if ok:
                o.found = path
                return o
            o.rejected.append(f"{path} (same first line, other bytes before byte {e.offset})")
        return None

    def _already_read(self, cand: Sibling) -> bool:
        """Whether the sibling holds what a checkpointed file held (an older rotation, or a
        compressed copy of one): it was read then, it is not read again."""
        same_head = self._read_by_head.get(cand.fid.crc, [])
        if len(same_head) > MAX_SAME_HEAD_CHECKS:
            return True  # cannot tell among so many: rather not read it twice
        for fc in same_head:
            try:
                if cand.size >= fc.offset and end_checksum(cand.fd, fc.offset) == fc.crc:
                    return True
            except OSError:
                continue
        return False

    # -- adopting -------------------------------------------------------------------------
    def _tailed(self, cand: Sibling, inp: TailInput, original: str) -> TailedFile:
        """A followed file for the sibling; records carry the original path (the lines
        were written there) and its tag and metadata."""
        desc = inp.table.discovery.describe(original)
        tf = TailedFile(original, cand.fd,
                        FileIdentity(cand.fid, self.agent, inp.table.partitions), desc.tag,
                        desc.meta, real=cand.path)
        cand.fd = -1  # the followed file owns the descriptor now
        return tf

    def _report_lost(self, o: _Orphan) -> None:
        o.inp.count("files_lost", 1)
        why = f"; {'; '.join(o.rejected)}" if o.rejected else ""
        event(log, logging.WARNING, "tail_file_lost",
              f"{o.entry.path} was rotated or deleted while the agent was down and no file "
              f"named {o.stems[0]}.* in {o.folder} holds its content{why}: any lines written to "
              f"it after byte {o.entry.offset} (its last checkpoint) are lost",
              input=o.inp.input_id, file=o.identity)


def _announce(o: _Orphan, path: str, how: str) -> None:
    o.inp.count("files_recovered", 1)
    event(log, logging.INFO, "tail_file_recovered",
          f"{o.entry.path} was {how} to {path} while the agent was down; finishing it "
          "from its committed offset", input=o.inp.input_id, file=o.identity)


def _still_there(fc: FileCheckpoint, fid: FileId) -> bool:
    """Whether the checkpointed path still holds the file with the bytes read there (only
    not opened now: descriptors, ``ignore_older_s``); unreadable counts as there."""
    try:
        st = os.stat(fc.path)
    except OSError:
        return False
    if (st.st_dev, st.st_ino) != (fid.dev, fid.ino):
        return False
    try:
        fd = os.open(fc.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        now = fingerprint(fd, os.fstat(fd))
        return (now is not None and now.crc == fid.crc and st.st_size >= fc.offset
                and has_end(fd, fc.offset, fc.crc))
    except OSError:
        return True
    finally:
        os.close(fd)


def _siblings(folder: str, group: list[_Orphan]) -> list[tuple[str, list[_Orphan]]]:
    """Rotated names of the group's files in ``folder``, each with the files it may belong
    to: plain files first, those on an orphan's inode (renamed) before copies, so the
    original wins over a duplicate. A name is looked up by its prefixes (no scan of the
    group per name: a folder may hold thousands of rotated files)."""
    stems: dict[str, list[_Orphan]] = {}
    for o in group:
        for key in (*o.stems, *((o.exact,) if o.exact else ())):
            stems.setdefault(key, []).append(o)
    inodes = {o.fid.ino for o in group}
    found: list[tuple[tuple[bool, bool, str], str, list[_Orphan]]] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for e in entries:
        owners = {id(o): o for key in rotation_keys(e.name) for o in stems.get(key, ())
                  if o.owns(e.name)}
        if not owners:
            continue
        try:
            ino = e.inode()
        except OSError:
            ino = -1
        found.append(((e.name.endswith(".gz"), ino not in inodes, e.name), e.path,
                      list(owners.values())))
    found.sort(key=lambda f: f[0])
    return [(path, owners) for _key, path, owners in found]
