"""The spool's files hold conversation text: owner-only, bounded in size and age (what a bound
drops is counted, never silent), and one person's entries can be found and erased."""

from __future__ import annotations

import json
import os
import stat
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infrastructure.spool import REJECTED_FILE, SET_ASIDE_FILE, BadLine, Spool
from infrastructure.spool_codec import SpoolEntry

pytestmark = pytest.mark.unit


def entry(user_id: uuid.UUID, text: str, companion_id: uuid.UUID | None = None) -> SpoolEntry:
    return SpoolEntry("conversation.message", 1, "d" * 16, (uuid.uuid4(), user_id, text),
                      user_id=user_id, companion_id=companion_id, at=datetime.now(UTC))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_spool_files_and_their_directory_are_owner_only_even_under_a_loose_umask(
    tmp_path: Path,
) -> None:
    old = os.umask(0o000)
    try:
        spool = Spool(tmp_path / "spool")
        path = spool.write([entry(uuid.uuid4(), "my sister's diagnosis")])
        spool.write_rejected(entry(uuid.uuid4(), "refused"), "CheckViolationError")
        spool.write_set_aside(BadLine("{broken", "unreadable"))
    finally:
        os.umask(old)
    assert path is not None
    assert mode(tmp_path / "spool") == 0o700
    assert {mode(p) for p in (tmp_path / "spool").iterdir()} == {0o600}


def test_a_directory_made_with_loose_modes_is_tightened_with_the_files_in_it(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    old_rejected = directory / REJECTED_FILE
    old_rejected.write_text('{"v":1}\n', encoding="utf-8")
    os.chmod(old_rejected, 0o644)

    Spool(directory).write([entry(uuid.uuid4(), "hello")])

    assert mode(directory) == 0o700
    assert {mode(p) for p in directory.iterdir()} == {0o600}


def test_pending_files_past_the_age_or_size_bound_are_dropped_and_counted(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, max_bytes=10_000, max_age=timedelta(days=1))
    old = spool.write([entry(uuid.uuid4(), "old") for _ in range(3)])
    assert old is not None
    long_ago = time.time() - 2 * 86_400
    os.utime(old, (long_ago, long_ago))
    for _ in range(5):
        spool.write([entry(uuid.uuid4(), "x" * 1_000) for _ in range(2)])
    size_before = sum(p.stat().st_size for p in spool.pending_files())
    assert size_before > 10_000

    dropped = spool.prune()

    assert dropped["pending"] >= 3 + 2  # the old file, then the oldest past the size bound
    assert sum(p.stat().st_size for p in spool.pending_files()) <= 10_000
    assert old not in spool.pending_files()


def test_kept_files_are_bounded_and_report_what_they_drop(tmp_path: Path) -> None:
    spool = Spool(tmp_path, kept_max_bytes=4_000, max_age=timedelta(days=1))
    dropped = sum(
        spool.write_rejected(entry(uuid.uuid4(), f"refused {n} " + "x" * 200), "DataError")
        for n in range(40)
    )
    assert dropped > 0
    lines = (tmp_path / REJECTED_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 40 - dropped
    assert (tmp_path / REJECTED_FILE).stat().st_size <= 4_000
    assert "refused 39" in lines[-1]  # the newest are kept

    records = [json.loads(line) for line in lines]
    records[0]["rejected_at"] = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    (tmp_path / REJECTED_FILE).write_text(
        "".join(json.dumps(r) + "\n" for r in records), encoding="utf-8"
    )
    assert spool.prune()["rejected"] == 1


def test_one_users_entries_are_found_and_erased_everywhere_and_no_one_elses(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    me, other = uuid.uuid4(), uuid.uuid4()
    luna, veda = uuid.uuid4(), uuid.uuid4()
    spool.write([entry(me, "mine with Luna", luna), entry(other, "theirs"),
                 entry(me, "mine with Veda", veda)])
    spool.write([entry(me, "only mine", luna)])
    spool.write_rejected(entry(me, "refused mine"), "DataError")
    spool.write_rejected(entry(other, "refused theirs"), "DataError")
    spool.write_set_aside(BadLine(f'{{"v": 7, "user": "{me}", "text": "odd"}}', "unreadable"))

    assert [e.args[2] for e in spool.pending_of(me)] == [
        "mine with Luna", "mine with Veda", "only mine"]

    assert spool.erase_pending(me, luna) == 2  # one companion's only
    assert [e.args[2] for e in spool.pending_of(me)] == ["mine with Veda"]
    assert spool.erase_pending(me, None) == 1
    assert spool.pending_of(me) == [] and len(spool.pending_of(other)) == 1
    assert len(spool.pending_files()) == 1  # the emptied file is gone
    text = "".join(p.read_text(encoding="utf-8") for p in tmp_path.iterdir()
                   if p.name not in (REJECTED_FILE, SET_ASIDE_FILE))
    assert "mine" not in text and "theirs" in text
