"""Write kinds: a statement's name, version and typed parameters, and the registry a replay
resolves spool lines against."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from core.errors import InvalidInput
from infrastructure.batch_spool import resolve
from infrastructure.spool_codec import SpoolEntry
from infrastructure.write_kinds import WriteKind, WriteKinds, statement_digest

pytestmark = pytest.mark.unit

SQL_V1 = "insert into notes (id, user_id, body) values ($1, $2, $3) on conflict do nothing"
SQL_V2 = "insert into notes (id, user_id, body, at) values ($1, $2, $3, $4) on conflict do nothing"
V1 = WriteKind.of("note", SQL_V1, "id:uuid user_id:uuid body:text")
V2 = WriteKind.of("note", SQL_V2, "id:uuid user_id:uuid body:text at:time", version=2)
NOW = datetime(2026, 5, 1, tzinfo=UTC)


def registry() -> WriteKinds:
    kinds = WriteKinds()
    kinds.register(V2, older=(V1,))
    return kinds


def line(kind: WriteKind, *args: object, **fields: object) -> SpoolEntry:
    user_id, companion_id = kind.owner(args)
    values: dict[str, object] = {
        "op": kind.op, "version": kind.version, "digest": kind.digest, "args": args,
        "user_id": user_id, "companion_id": companion_id, "at": NOW,
    }
    values.update(fields)
    return SpoolEntry(**values)  # type: ignore[arg-type]


def test_a_kind_knows_whose_write_it_is_and_checks_its_arguments() -> None:
    user_id = uuid.uuid4()
    assert V2.owner((uuid.uuid4(), user_id, "x", NOW)) == (user_id, None)
    assert V2.mismatch((uuid.uuid4(), user_id, "x", NOW)) is None
    assert "takes 4 arguments" in (V2.mismatch((uuid.uuid4(),)) or "")
    assert "body" in (V2.mismatch((uuid.uuid4(), user_id, 5, NOW)) or "")
    assert "at" in (V2.mismatch((uuid.uuid4(), user_id, "x", NOW.replace(tzinfo=None))) or "")
    vectors = WriteKind.of("v", "select $1", "embedding:vector?")
    assert vectors.mismatch((np.zeros(3, dtype=np.float32),)) is None
    assert vectors.mismatch((None,)) is None
    assert vectors.mismatch(("[1,2]",)) is not None


def test_declared_parameters_must_match_the_statement() -> None:
    with pytest.raises(InvalidInput, match="takes 3 parameters, 2 are declared"):
        WriteKind.of("note", SQL_V1, "id:uuid user_id:uuid")
    with pytest.raises(InvalidInput, match="bad parameter"):
        WriteKind.of("note", SQL_V1, "id:uuid user_id:uuid body:blob")


def test_a_changed_statement_needs_a_new_version() -> None:
    kinds = registry()
    kinds.register(V2, older=(V1,))  # the same again changes nothing
    changed = WriteKind.of("note", SQL_V2 + " ", "id:uuid user_id:uuid body:text at:time",
                           version=2)
    with pytest.raises(InvalidInput, match="another statement"):
        kinds.register(changed)
    with pytest.raises(InvalidInput, match="lower versions"):
        WriteKinds().register(V1, older=(V2,))


def test_replay_resolves_lines_by_kind_and_version_only() -> None:
    kinds = registry()
    user_id = uuid.uuid4()
    assert resolve(line(V2, uuid.uuid4(), user_id, "hi", NOW), kinds) == (V2, "")
    # A line spooled before the upgrade runs the kept old statement.
    assert resolve(line(V1, uuid.uuid4(), user_id, "hi"), kinds) == (V1, "")
    # A line of the first format is matched by its statement's fingerprint, never run as is.
    legacy = SpoolEntry("note", None, statement_digest(SQL_V1), (uuid.uuid4(), user_id, "hi"))
    assert resolve(legacy, kinds) == (V1, "")


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (SpoolEntry("users.rename", 1, "x", ("Mallory",)), "unknown op"),
        (line(V2, uuid.uuid4(), uuid.uuid4(), "hi", NOW, version=3), "version 3"),
        (line(V2, uuid.uuid4(), uuid.uuid4(), "hi", NOW, digest="0" * 16), "changed"),
        (SpoolEntry("note", None, statement_digest("update public.users set x = $1"), ("x",)),
         "first spool format"),
        (line(V2, uuid.uuid4(), uuid.uuid4(), "hi"), "takes 4 arguments"),
        (line(V2, uuid.uuid4(), "not-a-uuid", "hi", NOW), "user_id"),
        (line(V2, uuid.uuid4(), uuid.uuid4(), "hi", NOW, user_id=uuid.uuid4()), "does not match"),
    ],
)
def test_replay_refuses_a_line_it_does_not_recognize_and_says_why(
    entry: SpoolEntry, reason: str
) -> None:
    kind, why = resolve(entry, registry())
    assert kind is None and reason in why
