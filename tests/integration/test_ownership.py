"""Ownership in the schema: a row that references a session or a companion can only reference
one of its own user's, whoever writes it (a Supabase client as `authenticated`, or the agent's
privileged role); the agent's reads by session filter by user as well; the migration that
introduced the rule brought older rows in line."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from infrastructure import migrations
from infrastructure.connection_pool import ConnectionPool
from infrastructure.model_clients import ModelClients
from services.memory.consolidation_service import ConsolidationService
from services.people.conversation_service import ConversationService
from services.people.follow_up_service import FollowUpService
from tests.support.memory_stack import memory_stack
from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import PostgresProcess
from tests.support.supabase_auth import as_authenticated, claims_for

pytestmark = pytest.mark.integration

OWNERSHIP_MIGRATION = "20261203170000"


@dataclass(frozen=True)
class Person:
    user_id: uuid.UUID
    companion_id: uuid.UUID
    session_id: uuid.UUID


async def add_person(conn: asyncpg.Connection | ConnectionPool) -> Person:
    person = Person(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    await conn.execute("insert into public.users (id) values ($1)", person.user_id)
    await conn.execute(
        "insert into public.companions (id, user_id, name) values ($1, $2, 'Veda')",
        person.companion_id, person.user_id,
    )
    await conn.execute(
        "insert into public.sessions (id, user_id, companion_id) values ($1, $2, $3)",
        person.session_id, person.user_id, person.companion_id,
    )
    return person


Forge = Callable[[asyncpg.Connection, Person, Person], Awaitable[object]]


def _sql(statement: str, *picks: Callable[[Person, Person], uuid.UUID]) -> Forge:
    async def forge(conn: asyncpg.Connection, a: Person, b: Person) -> object:
        return await conn.execute(statement, *(pick(a, b) for pick in picks))

    return forge


def a_user(a: Person, b: Person) -> uuid.UUID:
    return a.user_id


def a_companion(a: Person, b: Person) -> uuid.UUID:
    return a.companion_id


def a_session(a: Person, b: Person) -> uuid.UUID:
    return a.session_id


def b_companion(a: Person, b: Person) -> uuid.UUID:
    return b.companion_id


def b_session(a: Person, b: Person) -> uuid.UUID:
    return b.session_id


# Rows carrying A's user_id (so row-level security lets A write them) with one reference
# pointing into B's data, and the constraint that must refuse each.
FORGED: dict[str, tuple[str, Forge]] = {
    "a message in B's session": ("messages_session_owner_fkey", _sql(
        "insert into public.messages (session_id, user_id, companion_id, role, content) "
        "values ($1, $2, $3, 'user', 'planted line')", b_session, a_user, a_companion)),
    "a message naming B's companion": ("messages_companion_owner_fkey", _sql(
        "insert into public.messages (session_id, user_id, companion_id, role, content) "
        "values ($1, $2, $3, 'user', 'planted line')", a_session, a_user, b_companion)),
    "a session with B's companion": ("sessions_companion_owner_fkey", _sql(
        "insert into public.sessions (user_id, companion_id) values ($1, $2)",
        a_user, b_companion)),
    "a memory on B's companion": ("memories_companion_owner_fkey", _sql(
        "insert into public.memories (user_id, companion_id, kind, category, key, value, "
        "content, content_hash) values ($1, $2, 'explicit', 'FACT', 'planted', 'x', "
        "'planted: x', 'h')", a_user, b_companion)),
    "personality state for B's companion": ("personality_state_companion_owner_fkey", _sql(
        "insert into public.personality_state (user_id, companion_id) values ($1, $2)",
        a_user, b_companion)),
    "a mood history entry for B's companion": (
        "personality_history_companion_owner_fkey", _sql(
            "insert into public.personality_history (user_id, companion_id, pleasure, arousal, "
            "dominance, emotion, reason) values ($1, $2, 0, 0, 0, 'content', 'planted')",
            a_user, b_companion)),
    "needs of B's companion": ("needs_companion_owner_fkey", _sql(
        "insert into public.needs (user_id, companion_id, need) values ($1, $2, 'rest')",
        a_user, b_companion)),
    "a quirk of B's companion": ("quirks_companion_owner_fkey", _sql(
        "insert into public.quirks (user_id, companion_id, name, description) "
        "values ($1, $2, 'planted', 'planted')", a_user, b_companion)),
    "a follow-up from B's session": ("follow_ups_session_owner_fkey", _sql(
        "insert into public.follow_ups (user_id, companion_id, session_id, topic) "
        "values ($1, $2, $3, 'planted')", a_user, a_companion, b_session)),
    "a follow-up for B's companion": ("follow_ups_companion_owner_fkey", _sql(
        "insert into public.follow_ups (user_id, companion_id, topic) values ($1, $2, 'x')",
        a_user, b_companion)),
    "an incident on B's companion": ("security_incidents_companion_owner_fkey", _sql(
        "insert into public.security_incidents (user_id, companion_id, kind) "
        "values ($1, $2, 'planted')", a_user, b_companion)),
    "a forgotten key of B's companion": ("forgotten_keys_companion_owner_fkey", _sql(
        "insert into public.forgotten_keys (user_id, companion_id, key, forgotten_at) "
        "values ($1, $2, 'planted', now())", a_user, b_companion)),
}

# Moving one's own row onto B's session or companion, by update.
MOVED: dict[str, tuple[str, Forge]] = {
    "a message into B's session": ("messages_session_owner_fkey", _sql(
        "update public.messages set session_id = $1 where user_id = $2", b_session, a_user)),
    "a memory onto B's companion": ("memories_companion_owner_fkey", _sql(
        "update public.memories set companion_id = $1 where user_id = $2", b_companion, a_user)),
    "a session onto B's companion": ("sessions_companion_owner_fkey", _sql(
        "update public.sessions set companion_id = $1 where user_id = $2", b_companion, a_user)),
    "a follow-up into B's session": ("follow_ups_session_owner_fkey", _sql(
        "update public.follow_ups set session_id = $1 where user_id = $2", b_session, a_user)),
}

# What B can be shown, counted by the privileged role after each attempt.
B_VIEW = (
    "select (select count(*) from public.messages where session_id = $1 or companion_id = $2)"
    " + (select count(*) from public.sessions where companion_id = $2)"
    " + (select count(*) from public.memories where companion_id = $2)"
    " + (select count(*) from public.personality_state where companion_id = $2)"
    " + (select count(*) from public.personality_history where companion_id = $2)"
    " + (select count(*) from public.needs where companion_id = $2)"
    " + (select count(*) from public.quirks where companion_id = $2)"
    " + (select count(*) from public.follow_ups where session_id = $1 or companion_id = $2)"
    " + (select count(*) from public.security_incidents where companion_id = $2)"
)


@dataclass(frozen=True)
class World:
    a: Person
    b: Person
    dsn: str
    pool: ConnectionPool

    async def b_view(self) -> int:
        return int(await self.pool.fetchval(B_VIEW, self.b.session_id, self.b.companion_id))


@pytest.fixture
async def world(pool: ConnectionPool, db_dsn: str) -> World:
    a, b = await add_person(pool), await add_person(pool)
    # A has one row of each kind that can be moved.
    await pool.execute(
        "insert into public.messages (session_id, user_id, companion_id, role, content) "
        "values ($1, $2, $3, 'user', 'my own line')", a.session_id, a.user_id, a.companion_id,
    )
    await pool.execute(
        "insert into public.memories (user_id, companion_id, kind, content, content_hash) "
        "values ($1, $2, 'episodic', 'my own line', 'h')", a.user_id, a.companion_id,
    )
    await pool.execute(
        "insert into public.follow_ups (user_id, companion_id, session_id, topic) "
        "values ($1, $2, $3, 'mine')", a.user_id, a.companion_id, a.session_id,
    )
    return World(a, b, db_dsn, pool)


@asynccontextmanager
async def acting_as(world: World, role: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction as A's Supabase client, or as the agent's privileged role."""
    if role == "authenticated":
        async with as_authenticated(world.dsn, claims_for(world.a.user_id)) as conn:
            yield conn
        return
    async with world.pool.acquire() as conn, conn.transaction():
        yield conn


@pytest.mark.parametrize("role", ["authenticated", "agent"])
@pytest.mark.parametrize("forged", list(FORGED))
async def test_a_row_referencing_another_users_session_or_companion_is_refused(
    world: World, role: str, forged: str
) -> None:
    constraint, forge = FORGED[forged]
    before = await world.b_view()
    async with acting_as(world, role) as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError) as caught:
            async with conn.transaction():
                await forge(conn, world.a, world.b)
    assert caught.value.constraint_name == constraint
    assert await world.b_view() == before


@pytest.mark.parametrize("role", ["authenticated", "agent"])
@pytest.mark.parametrize("moved", list(MOVED))
async def test_moving_ones_own_row_onto_another_users_session_or_companion_is_refused(
    world: World, role: str, moved: str
) -> None:
    constraint, move = MOVED[moved]
    before = await world.b_view()
    async with acting_as(world, role) as conn:
        with pytest.raises(asyncpg.ForeignKeyViolationError) as caught:
            async with conn.transaction():
                await move(conn, world.a, world.b)
    assert caught.value.constraint_name == constraint
    assert await world.b_view() == before


async def test_rows_referencing_ones_own_session_and_companion_are_accepted_from_both_roles(
    world: World,
) -> None:
    mine = Person(world.a.user_id, world.a.companion_id, world.a.session_id)
    for role in ("authenticated", "agent"):
        async with acting_as(world, role) as conn:
            u, c, sid = mine.user_id, mine.companion_id, mine.session_id
            for statement, args in (
                ("insert into public.messages (session_id, user_id, companion_id, role, content) "
                 "values ($1, $2, $3, 'user', 'fine')", (sid, u, c)),
                ("insert into public.messages (session_id, user_id, role, content) "
                 "values ($1, $2, 'user', 'fine')", (sid, u)),
                ("insert into public.follow_ups (user_id, companion_id, session_id, topic) "
                 "values ($1, $2, $3, 'fine')", (u, c, sid)),
                ("insert into public.follow_ups (user_id, topic) values ($1, 'fine')", (u,)),
            ):
                assert await conn.execute(statement, *args) == "INSERT 0 1"
            # A shared memory (no companion) and a session without one reference nobody.
            assert await conn.execute(
                "insert into public.memories (user_id, companion_id, kind, content, content_hash)"
                " values ($1, null, 'episodic', 'shared', md5(random()::text))", mine.user_id,
            ) == "INSERT 0 1"
            assert await conn.execute(
                "insert into public.sessions (user_id, companion_id) values ($1, null)",
                mine.user_id,
            ) == "INSERT 0 1"


async def test_deleting_a_session_or_companion_keeps_the_delete_rules_they_had(
    world: World,
) -> None:
    a = world.a
    await world.pool.execute(
        "insert into public.security_incidents (user_id, companion_id, kind) "
        "values ($1, $2, 'override')", a.user_id, a.companion_id,
    )
    # A session's messages go with it; its follow-up stays, detached from it.
    await world.pool.execute("delete from public.sessions where id = $1", a.session_id)
    assert await world.pool.fetchval(
        "select count(*) from public.messages where user_id = $1", a.user_id) == 0
    assert await world.pool.fetchval(
        "select session_id is null and topic = 'mine' from public.follow_ups "
        "where user_id = $1", a.user_id)
    # A companion's memories and follow-ups go with it; an incident stays, detached from it.
    await world.pool.execute("delete from public.companions where id = $1", a.companion_id)
    assert await world.pool.fetchval(
        "select count(*) from public.memories where user_id = $1", a.user_id) == 0
    assert await world.pool.fetchval(
        "select count(*) from public.follow_ups where user_id = $1", a.user_id) == 0
    assert await world.pool.fetchval(
        "select companion_id is null from public.security_incidents where user_id = $1",
        a.user_id)
    # Deleting the person detaches the incident from them too (kept for the statistics).
    await world.pool.execute("delete from public.users where id = $1", a.user_id)
    assert await world.pool.fetchval(
        "select count(*) from public.security_incidents where user_id is null "
        "and companion_id is null and kind = 'override'") == 1


async def test_every_reference_to_a_session_or_companion_is_checked_against_its_owner(
    world: World,
) -> None:
    """Guards tables added later: a new reference must carry user_id in its foreign key."""
    rows = await world.pool.fetch(
        "select c.conrelid::regclass::text as tbl, c.conname, "
        "  array(select a.attname from unnest(c.conkey) with ordinality k(num, i) "
        "        join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.num "
        "        order by k.i)::text[] as cols, "
        "  array(select a.attname from unnest(c.confkey) with ordinality k(num, i) "
        "        join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.num "
        "        order by k.i)::text[] as ref_cols "
        "from pg_constraint c where c.contype = 'f' "
        "and c.confrelid in ('public.sessions'::regclass, 'public.companions'::regclass)"
    )
    composite = {(r["tbl"], r["cols"][0]) for r in rows
                 if r["cols"][1:] == ["user_id"] and r["ref_cols"] == ["id", "user_id"]}
    references = {(r["tbl"], r["cols"][0]) for r in rows}
    assert references - composite == set()
    assert len(composite) == len(FORGED)


# --- reads filter by user as well ---------------------------------------------------------------


async def plant_legacy_row(dsn: str, statement: str, *args: object) -> None:
    """A row written before the ownership constraints existed (their triggers skipped)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("set local session_replication_role = replica")
            await conn.execute(statement, *args)
    finally:
        await conn.close()


async def test_a_resumed_session_and_its_consolidation_read_only_their_users_messages(
    world: World, db_dsn: str, make_settings
) -> None:
    a, b = world.a, world.b
    await world.pool.execute(
        "insert into public.messages (session_id, user_id, companion_id, role, content, "
        "created_at) values ($1, $2, $3, 'user', 'I adopted a greyhound called Pip', "
        "now() - interval '2 minutes'), ($1, $2, $3, 'assistant', 'Pip is a lovely name', "
        "now() - interval '1 minute')", b.session_id, b.user_id, b.companion_id,
    )
    await plant_legacy_row(
        db_dsn,
        "insert into public.messages (session_id, user_id, companion_id, role, content, "
        "created_at) values ($1, $2, null, 'user', 'PLANTED: my bank PIN is 0000', now())",
        b.session_id, a.user_id,
    )
    async with OpenAIStubServer(chat_script=[{"json": {"memories": []}}]) as server:
        settings = make_settings(openai_base_url=server.base_url, openai_max_retries=0)
        pool = await ConnectionPool.create(settings, dsn=db_dsn)
        models = ModelClients.create(settings)
        try:
            async with memory_stack(pool=pool, settings=settings, server=server) as stack:
                conversations = ConversationService(
                    pool=pool, models=models, cache=stack.cache, batcher=stack.batcher,
                    follow_ups=FollowUpService(pool=pool, batcher=stack.batcher),
                    settings=settings,
                )
                session = await conversations.start(b.user_id, b.companion_id)
                assert session.resumed and session.id == b.session_id
                assert [t.text for t in session.history] == [
                    "I adopted a greyhound called Pip", "Pip is a lovely name"
                ]
                await conversations.end(session)
                assert await world.pool.fetchval(
                    "select turn_count from public.sessions where id = $1", b.session_id
                ) == 2
                await conversations.aclose()

                consolidation = ConsolidationService(
                    pool=pool, models=models, memory=stack.memory, settings=settings
                )
                result = await consolidation.consolidate_session(b.session_id)
                await consolidation.aclose()
                sent = [r.json for r in server.requests_to("/v1/chat/completions")]
        finally:
            await models.aclose()
            await pool.aclose()
    assert result.messages == 2
    transcripts = [m["content"] for body in sent for m in body["messages"] if m["role"] == "user"]
    assert len(transcripts) == 1 and "greyhound" in transcripts[0]
    assert not any("PLANTED" in t for t in transcripts)


# --- the migration brings older rows in line -------------------------------------------------


@pytest.fixture
def pre_ownership(postgres: PostgresProcess, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An empty database and a directory holding the migrations before the ownership one."""
    name = f"o_{uuid.uuid4().hex[:10]}"
    postgres.psql(f"create database {name}")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for path in sorted(migrations.MIGRATIONS_DIR.glob("*.sql")):
        if path.name < OWNERSHIP_MIGRATION:
            shutil.copy(path, earlier / path.name)
    yield postgres.dsn_for(name), earlier
    postgres.psql(f"drop database if exists {name} with (force)")


async def test_the_ownership_migration_deletes_or_detaches_rows_that_point_into_another_users_data(
    pre_ownership: tuple[str, Path],
) -> None:
    dsn, earlier = pre_ownership
    conn = await asyncpg.connect(dsn)
    try:
        await migrations.apply_pending(conn, earlier)
        a, b = await add_person(conn), await add_person(conn)
        legit = await add_person(conn)
        insert = conn.execute
        # Forged rows, written while the schema still accepted them.
        await insert("insert into public.messages (session_id, user_id, role, content) "
                     "values ($1, $2, 'user', 'forged into B')", b.session_id, a.user_id)
        await insert("insert into public.messages (session_id, user_id, companion_id, role, "
                     "content) values ($1, $2, $3, 'user', 'own session, B companion')",
                     a.session_id, a.user_id, b.companion_id)
        await insert("insert into public.memories (user_id, companion_id, kind, content, "
                     "content_hash) values ($1, $2, 'episodic', 'on B companion', 'h')",
                     a.user_id, b.companion_id)
        for table in ("personality_state", "needs"):
            extra = ", need" if table == "needs" else ""
            value = ", 'rest'" if table == "needs" else ""
            await insert(f"insert into public.{table} (user_id, companion_id{extra}) "
                         f"values ($1, $2{value})", a.user_id, b.companion_id)
        a_other = uuid.uuid4()
        await insert("insert into public.sessions (id, user_id, companion_id) "
                     "values ($1, $2, $3)", a_other, a.user_id, b.companion_id)
        await insert("insert into public.follow_ups (user_id, companion_id, session_id, topic) "
                     "values ($1, $2, $3, 'forged follow-up')",
                     a.user_id, a.companion_id, b.session_id)
        await insert("insert into public.security_incidents (user_id, companion_id, kind) "
                     "values ($1, $2, 'forged')", a.user_id, b.companion_id)
        # Rows that follow the rule, which must come through unchanged.
        await insert("insert into public.messages (session_id, user_id, companion_id, role, "
                     "content) values ($1, $2, $3, 'user', 'legit')",
                     legit.session_id, legit.user_id, legit.companion_id)
        await insert("insert into public.memories (user_id, companion_id, kind, content, "
                     "content_hash) values ($1, $2, 'episodic', 'legit', 'h')",
                     legit.user_id, legit.companion_id)

        applied = await migrations.apply_pending(conn)
        assert OWNERSHIP_MIGRATION in applied

        async def rows(sql: str, *args: object) -> list[tuple[object, ...]]:
            return [tuple(r) for r in await conn.fetch(sql, *args)]

        # Deleted: the message in B's session, the memory and companion state on B's companion.
        assert await rows("select content from public.messages where user_id = $1 "
                          "order by content", a.user_id) == [("own session, B companion",)]
        for table in ("memories", "personality_state", "needs"):
            assert await conn.fetchval(
                f"select count(*) from public.{table} where user_id = $1", a.user_id) == 0
        # Detached: the references to B's companion or session, the rows kept with A.
        assert await rows("select companion_id from public.messages where user_id = $1",
                          a.user_id) == [(None,)]
        assert await rows("select id, companion_id from public.sessions where user_id = $1 "
                          "and id = $2", a.user_id, a_other) == [(a_other, None)]
        assert await rows("select session_id, companion_id from public.follow_ups "
                          "where user_id = $1", a.user_id) == [(None, a.companion_id)]
        assert await rows("select companion_id from public.security_incidents "
                          "where user_id = $1", a.user_id) == [(None,)]
        # Everything that followed the rule is untouched, and the rule now holds.
        assert await rows("select content, companion_id from public.messages "
                          "where user_id = $1", legit.user_id) == [("legit", legit.companion_id)]
        assert await conn.fetchval(
            "select count(*) from public.memories where user_id = $1 and companion_id = $2",
            legit.user_id, legit.companion_id) == 1
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await insert("insert into public.messages (session_id, user_id, role, content) "
                         "values ($1, $2, 'user', 'again')", b.session_id, a.user_id)
    finally:
        await conn.close()
