"""Keys a person asked to forget, kept in Postgres (`public.forgotten_keys`), so that no process
saves them again from words said before the forget.

A forget deletes every version of a key, but the session's transcript keeps the words that
said it, and consolidation may distill them into that key again: at the session's end, in the
maintenance pass, or in another process hours later. The in-process notes
(`core.forgotten.ForgottenMemories`) cannot reach those, so the forget also records the key,
its scope and its time in the table, in the same statement as the delete (`NOTE_KEY`,
`NOTE_DELETED_KEY`, used by `forgetting`; by the spooled forget too). Consolidation reads them
(`forgotten_keys`) and skips a key whose value comes from words said up to its forget; words
said after it may set a new value. A forget by id records the deleted memory's key when it has
one (an explicit memory).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from core.forgotten import ForgottenMemories
from core.memory_records import normalize_key
from infrastructure.connection_pool import ConnectionPool

_INSERT = "insert into public.forgotten_keys (user_id, companion_id, key, forgotten_at) "
# A later forget moves the note forward, never back (a replayed line is older).
_UPSERT = (
    " on conflict (user_id, companion_id, key) do update set forgotten_at = "
    "greatest(public.forgotten_keys.forgotten_at, excluded.forgotten_at)"
)

# A CTE clause noting key $3 of user $1 in scope $2 as forgotten at $4. It is noted even when
# no version was stored (the person told it in this session; consolidation has not saved it
# yet), as long as the user and the scope exist (a forget aimed elsewhere notes nothing).
NOTE_KEY = (
    "noted as (" + _INSERT
    + "select $1::uuid, $2::uuid, $3::text, $4::timestamptz "
    "where exists (select 1 from public.users u where u.id = $1) and ($2::uuid is null or "
    "exists (select 1 from public.companions c where c.id = $2 and c.user_id = $1))"
    + _UPSERT + ")"
)


def note_deleted_key(user: str, companion: str, at: str) -> str:
    """A CTE clause noting the key of the explicit memory deleted by the CTE `gone` (columns
    kind, key) as forgotten; `user`, `companion` and `at` are the statement's placeholders."""
    return (
        "noted as (" + _INSERT
        + f"select {user}::uuid, {companion}::uuid, g.key, {at}::timestamptz from gone g "
        "where g.kind = 'explicit' and g.key is not null" + _UPSERT + ")"
    )


@dataclass(frozen=True)
class ForgottenKeys:
    """The keys of one scope forgotten after some moment, each with the time of its forget.

    Attributes:
        at: normalized key -> the latest forget of it.
    """

    at: Mapping[str, datetime]

    def covers(self, key: str, said_at: datetime) -> bool:
        """Whether a value of `key` drawn from words said at `said_at` (the earliest of them)
        could bring a forgotten one back: the forget came after them."""
        forgotten_at = self.at.get(normalize_key(key))
        return forgotten_at is not None and said_at <= forgotten_at


async def forgotten_keys(
    pool: ConnectionPool,
    notes: ForgottenMemories,
    user_id: uuid.UUID,
    companion_id: uuid.UUID | None,
    since: datetime,
) -> ForgottenKeys:
    """The keys of exactly this scope forgotten at or after `since` (the earliest message a
    consolidation batch distills): those in the table, and those whose forget still waits in
    this process's spool (noted in `notes` only, until the spool is replayed)."""
    rows = await pool.fetch(
        "select key, forgotten_at from public.forgotten_keys where user_id = $1 "
        "and companion_id is not distinct from $2 and forgotten_at >= $3",
        user_id, companion_id, since,
    )
    at = {row["key"]: row["forgotten_at"] for row in rows}
    for note in notes.key_notes(user_id):
        if note.companion_id == companion_id and note.before >= since:
            at[note.key] = max(note.before, at.get(note.key, note.before))
    return ForgottenKeys(at)
