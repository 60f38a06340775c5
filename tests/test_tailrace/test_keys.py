"""Key names: built in one place, with paired parsers, one hash tag per partition."""

from __future__ import annotations

import pytest

from tailrace.keys import Keys, sink_group, sink_output_name


def test_every_partition_key_shares_the_partition_hash_tag() -> None:
    k = Keys("tr")
    keys = [k.raw(3), k.out(3), k.dlq(3), k.offsets(3), k.lease(3, "processors"),
            k.epoch(3, "sink:es"), k.checkpoint(3, "sink:file")]
    assert all("{p3}" in key for key in keys)
    assert k.raw(3) == "tr:{p3}:raw"
    assert {k.partition_of(key) for key in keys} == {3}


def test_parsers_invert_builders() -> None:
    k = Keys("x")
    assert k.partition_of(k.out(12).encode()) == 12
    assert k.worker_id_of(k.worker("proc-1")) == "proc-1"
    assert sink_output_name(sink_group("es.0")) == "es.0"
    assert sink_output_name("processors") is None


def test_parsers_refuse_foreign_keys() -> None:
    with pytest.raises(ValueError):
        Keys("tr").partition_of("other:{p1}:raw")
    with pytest.raises(ValueError):
        Keys("tr").worker_id_of("tr:members:x")
