"""A followed file's parts each have one owner (see edge_agent/followed.py): the code of the
agent assigns a part's fields only where that module's table says."""

from __future__ import annotations

import ast
import os
from pathlib import Path

from edge_agent.followed import FileIdentity, InFlight, ReadBuffer, TailedFile
from edge_agent.identity import FileId, identity_key, partition_for

ROOT = Path(__file__).resolve().parents[2]
PARTS = {"ident": FileIdentity, "buf": ReadBuffer, "out": InFlight}
# Where each part's fields may be assigned outside the part's own methods.
OWNERS = {"ident": set(), "out": set(), "buf": {"reader.py"}, "own": {"files.py", "tail.py"}}
OWN = set(TailedFile.__slots__) - set(PARTS)


def _writes(path: Path) -> list[tuple[str, str, int]]:
    """(part, field, line) of every assignment to a part's field in ``path``: through
    ``x.buf.f``/``x.out.f``/``x.ident.f``, a local alias of one (``b = tf.buf``), or a
    followed file's own slot (``tf.f``)."""
    found = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if not isinstance(fn, ast.FunctionDef):
            continue
        aliases: dict[str, str] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign):
                pairs: list[tuple[ast.expr, ast.expr]] = []
                for t in node.targets:
                    if isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple):
                        pairs += zip(t.elts, node.value.elts, strict=False)
                    else:
                        pairs.append((t, node.value))
                for t, v in pairs:
                    if (isinstance(t, ast.Name) and isinstance(v, ast.Attribute)
                            and v.attr in PARTS):
                        aliases[t.id] = v.attr
        for node in ast.walk(fn):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            flat = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            for t in flat:
                if not isinstance(t, ast.Attribute):
                    continue
                base = t.value
                if isinstance(base, ast.Attribute) and base.attr in PARTS:
                    found.append((base.attr, t.attr, t.lineno))
                elif isinstance(base, ast.Name) and base.id in aliases:
                    found.append((aliases[base.id], t.attr, t.lineno))
                elif isinstance(base, ast.Name) and base.id == "tf" and t.attr in OWN:
                    found.append(("own", t.attr, t.lineno))
    return found


def test_each_part_of_a_followed_file_is_assigned_only_by_its_owner() -> None:
    wrong = []
    seen: dict[str, int] = {}
    for path in sorted((ROOT / "edge_agent").glob("*.py")):
        if path.name == "followed.py":  # the parts' own methods
            continue
        for part, field, line in _writes(path):
            seen[f"{path.name}:{part}"] = seen.get(f"{path.name}:{part}", 0) + 1
            if path.name not in OWNERS[part]:
                wrong.append(f"{path.name}:{line}: {part}.{field}")
    assert not wrong, f"assigned outside the owner (use the part's methods): {wrong}"
    # The scan sees the owners' writes (else it would pass while looking at nothing).
    assert seen.get("reader.py:buf", 0) > 20 and seen.get("files.py:own", 0) > 3
    assert seen.get("tail.py:own", 0) > 3


def test_the_identity_and_partition_follow_the_base_and_generation() -> None:
    fid, other = FileId(1, 2, 3), FileId(1, 2, 4)
    ident = FileIdentity(fid, "a", 8)
    assert ident.identity == fid.key("a") and ident.partition == partition_for(fid.key("a"), 8)
    ident.set_generation(2)
    assert ident.identity == identity_key(fid.key("a"), 2)
    ident.pin(other.key("a") + ":g3", copy=True)
    assert (ident.base, ident.pinned, ident.adopted) == (other.key("a"), 3, True)
    assert ident.partition == partition_for(other.key("a"), 8)
    assert ident.take_pin() == 3 and ident.pinned is None
    ident.reclaim()
    assert (ident.base, ident.adopted) == (fid.key("a"), False)
    assert ident.partition == partition_for(fid.key("a"), 8)


def test_a_sealed_batch_moves_the_committed_offset_only_when_accepted(tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    path.write_bytes(b"one\ntwo\n")
    fd = os.open(path, os.O_RDONLY)
    try:
        tf = TailedFile(str(path), fd, FileIdentity(FileId(1, 2, 3), "a", 1), "t", {}, size=8)
        tf.seek(0, tf.crc_before(0))
        tf.buf.lines, tf.buf.offsets = [b"one", b"two"], [0, 4]
        tf.buf.pos = tf.buf.scanned = 8  # as the reader leaves it
        batch = tf.take_batch("a", "tail.0")
        assert (batch.start, batch.end, tf.buf.lines) == (0, 8, [])
        tf.out.seal(batch, tf.crc_before(8))
        assert tf.committed == 0 and tf.held_bytes == 8 and not tf.settled
        assert tf.out.accept() is batch
        assert tf.committed == 8 and tf.out.end_crc == tf.crc_before(8) and tf.settled
        tf.seek(4, None)  # Redis holds another offset: it wins
        assert (tf.committed, tf.out.verified, tf.buf.pos, tf.buf.scanned) == (4, 4, 4, 4)
    finally:
        os.close(fd)
