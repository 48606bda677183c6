from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infrastructure.spool import REJECTED_FILE, STALE_AFTER_S, Spool
from infrastructure.spool_codec import (
    SpoolCodecError,
    SpoolEntry,
    decode_value,
    dumps_entry,
    encode_value,
    loads_entry,
)
from infrastructure.write_kinds import statement_digest

pytestmark = pytest.mark.unit

IST = timezone(timedelta(hours=5, minutes=30))
SQL = "insert into t (id, n) values ($1, $2) on conflict do nothing"
DIGEST = statement_digest(SQL)


def entry(*args: object, user_id: uuid.UUID | None = None) -> SpoolEntry:
    return SpoolEntry("op", 1, DIGEST, tuple(args), user_id=user_id,
                      at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
    st.uuids(),
    st.datetimes(timezones=st.sampled_from([UTC, IST])),
    st.datetimes(),
    st.dates(),
    st.timedeltas(),
    st.decimals(allow_nan=False),
    st.binary(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(), inner, max_size=3),
    ),
    max_leaves=10,
)


@given(st.lists(values, max_size=6))
def test_every_supported_value_survives_a_trip_through_a_spool_line(args: list[object]) -> None:
    written = entry(*args, user_id=uuid.uuid4())
    back = loads_entry(dumps_entry(written))
    assert back == written
    assert [type(a) for a in back.args] == [type(a) for a in written.args]


def test_a_spool_line_names_the_write_kind_and_its_owner_and_never_carries_sql() -> None:
    user_id = uuid.uuid4()
    line = json.loads(dumps_entry(entry(1, user_id=user_id)))
    assert line["op"] == "op" and line["ver"] == 1 and line["stmt"] == DIGEST
    assert line["user"] == str(user_id) and line["at"].startswith("2026-01-02")
    assert "sql" not in line and "insert" not in json.dumps(line)


def test_a_line_of_the_first_format_is_read_with_its_statement_fingerprinted_not_kept() -> None:
    line = json.dumps({"v": 1, "op": "op", "sql": SQL, "args": [{"$uuid": str(uuid.UUID(int=1))}]})
    back = loads_entry(line)
    assert (back.op, back.version, back.digest) == ("op", None, DIGEST)
    assert back.args == (uuid.UUID(int=1),) and back.user_id is None


def test_vectors_keep_dtype_shape_and_exact_values() -> None:
    vec = np.random.default_rng(7).standard_normal(384).astype(np.float32)
    matrix = np.arange(6, dtype=np.float64).reshape(2, 3)
    back = loads_entry(dumps_entry(entry(vec, matrix, [0.25, -1.5])))
    assert back.args[0].dtype == np.float32
    assert np.array_equal(back.args[0], vec)
    assert back.args[1].shape == (2, 3) and back.args[1].dtype == np.float64
    assert back.args[2] == [0.25, -1.5]


def test_numpy_scalars_become_plain_python_numbers() -> None:
    assert decode_value(encode_value(np.float32(0.5))) == 0.5
    assert type(decode_value(encode_value(np.int64(3)))) is int


def test_tagged_types_are_written_as_tags_and_plain_dicts_cannot_be_mistaken_for_them() -> None:
    uid = uuid.uuid4()
    line = json.loads(dumps_entry(entry(uid, date(2026, 1, 2), {"$uuid": "x"})))
    assert line["args"][0] == {"$uuid": str(uid)}
    assert line["args"][1] == {"$date": "2026-01-02"}
    back = loads_entry(json.dumps(line))
    assert back.args[2] == {"$uuid": "x"}


def test_aware_datetimes_keep_their_offset() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 890, tzinfo=timezone(timedelta(hours=-7)))
    back = decode_value(encode_value(moment))
    assert back == moment and back.utcoffset() == timedelta(hours=-7)


def test_unsupported_values_are_refused() -> None:
    with pytest.raises(SpoolCodecError):
        encode_value(object())
    with pytest.raises(SpoolCodecError):
        encode_value([1, {1, 2}])


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '{"v": 99, "op": "op", "ver": 1, "stmt": "d", "args": []}',
        '{"v": 2, "op": "op", "ver": 1, "stmt": "d"}',
        '{"v": 2, "op": "op", "ver": "1", "stmt": "d", "args": []}',
        '{"v": 2, "op": "op", "ver": 1, "stmt": "d", "args": [{"$nope": 1}]}',
        '{"v": 2, "op": "op", "ver": 1, "stmt": "d", "args": [{"$uuid": "not-a-uuid"}]}',
        '{"v": 2, "op": "op", "ver": 1, "stmt": "d", "user": "nobody", "args": []}',
        '{"v": 2, "op": 5, "ver": 1, "stmt": "d", "args": []}',
        '{"v": 1, "op": "op", "sql": "s"}',
    ],
)
def test_malformed_lines_raise_a_codec_error(line: str) -> None:
    with pytest.raises(SpoolCodecError):
        loads_entry(line)


def _entries(n: int) -> list[SpoolEntry]:
    return [entry(uuid.uuid4(), i) for i in range(n)]


def test_a_written_file_is_claimed_read_and_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    entries = _entries(5)
    spool.write(entries)
    assert len(spool.pending_files()) == 1
    assert not list((tmp_path / "spool").glob(".*.part"))
    [claim] = spool.claim()
    assert spool.pending_files() == []
    read, bad = spool.read(claim)
    assert read == entries and bad == []
    spool.finish(claim)
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_claimed_file_is_not_claimed_again(tmp_path: Path) -> None:
    first, second = Spool(tmp_path), Spool(tmp_path)
    first.write(_entries(2))
    assert len(first.claim()) == 1
    assert second.claim() == []


def test_concurrent_claimers_split_the_files_without_overlap(tmp_path: Path) -> None:
    writer = Spool(tmp_path)
    for _ in range(40):
        writer.write(_entries(1))
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        results.append([c.path.name.split(".claimed-")[0] for c in Spool(tmp_path).claim()])

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [n for r in results for n in r]
    assert len(names) == 40 and len(set(names)) == 40


def test_a_stale_claim_and_a_stale_partial_file_are_recovered(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.write(_entries(2))
    [abandoned] = spool.claim()
    partial = tmp_path / ".spool-20260101T000000000000-1-deadbeef.jsonl.part"
    good = dumps_entry(_entries(1)[0])
    partial.write_text(good + "\n" + good[: len(good) // 2], encoding="utf-8")

    assert spool.claim() == []  # fresh claims and fresh partial files belong to a live writer
    old = time.time() - STALE_AFTER_S - 60
    os.utime(abandoned.path, (old, old))
    os.utime(partial, (old, old))

    claims = spool.claim()
    assert len(claims) == 2
    counts = sorted((len(e), len(b)) for e, b in (spool.read(claim) for claim in claims))
    assert counts == [(1, 1), (2, 0)]


def test_unreadable_lines_are_returned_with_the_reason_beside_the_good_ones(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    path = spool.write(_entries(1))
    assert path is not None
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("{broken\n")
    [claim] = spool.claim()
    entries, bad = spool.read(claim)
    assert len(entries) == 1
    assert [b.line for b in bad] == ["{broken"] and "unreadable" in bad[0].reason


def test_rejected_writes_go_to_a_file_that_is_never_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    refused = _entries(1)[0]
    spool.write_rejected(refused, "CheckViolationError")
    assert spool.claim() == []
    record = json.loads((tmp_path / REJECTED_FILE).read_text(encoding="utf-8"))
    assert record["error"] == "CheckViolationError" and "sql" not in record
    assert loads_entry(json.dumps(record)) == refused


def test_vectors_are_written_as_raw_bytes_and_the_older_list_form_still_reads() -> None:
    vec = np.linspace(-1, 1, 384, dtype=np.float32)
    tagged = encode_value(vec)
    assert set(tagged) == {"$array", "dtype", "shape"}
    assert np.array_equal(decode_value(tagged), vec)
    older = {"$ndarray": vec.tolist(), "dtype": vec.dtype.str}
    back = decode_value(older)
    assert back.dtype == np.float32 and np.array_equal(back, vec)
