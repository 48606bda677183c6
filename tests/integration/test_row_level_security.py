"""Row-level security, verified the way Supabase applies it: as the `authenticated` role with
the JWT's `sub` claim set for the transaction, a person sees and changes only their own rows."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import pytest

from infrastructure.connection_pool import ConnectionPool
from tests.support.supabase_auth import as_authenticated, claims_for

pytestmark = pytest.mark.integration

# Every table whose rows belong to one person (the users table is keyed by id instead).
PER_USER_TABLES = (
    "companions", "sessions", "messages", "memories", "personality_state",
    "personality_history", "needs", "quirks", "follow_ups", "security_incidents",
    "forgotten_keys",
)


@dataclass(frozen=True)
class Owner:
    user_id: uuid.UUID
    companion_id: uuid.UUID
    session_id: uuid.UUID


Insert = Callable[[asyncpg.Connection, Owner], Awaitable[object]]


async def _companion(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.companions (id, user_id, name) values ($1, $2, $3)",
        o.companion_id, o.user_id, f"c-{o.companion_id.hex[:8]}",
    )


async def _session(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.sessions (id, user_id, companion_id, room) values ($1, $2, $3, 'r')",
        o.session_id, o.user_id, o.companion_id,
    )


async def _message(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.messages (session_id, user_id, companion_id, role, content) "
        "values ($1, $2, $3, 'user', 'my secret is that I love pineapple pizza')",
        o.session_id, o.user_id, o.companion_id,
    )


async def _memory(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.memories (user_id, companion_id, kind, category, key, value, content, "
        "content_hash) values ($1, $2, 'explicit', 'FACT', 'secret', 'pineapple pizza', "
        "'secret: pineapple pizza', md5(random()::text))",
        o.user_id, o.companion_id,
    )


async def _personality_state(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.personality_state (user_id, companion_id) values ($1, $2)",
        o.user_id, o.companion_id,
    )


async def _personality_history(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.personality_history (user_id, companion_id, pleasure, arousal, "
        "dominance, emotion, reason) values ($1, $2, 0.1, 0.2, 0.3, 'content', 'test')",
        o.user_id, o.companion_id,
    )


async def _needs(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.needs (user_id, companion_id, need) values ($1, $2, 'social')",
        o.user_id, o.companion_id,
    )


async def _quirk(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.quirks (user_id, companion_id, name, description) "
        "values ($1, $2, 'hums', 'hums when thinking')",
        o.user_id, o.companion_id,
    )


async def _follow_up(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.follow_ups (user_id, companion_id, session_id, topic) "
        "values ($1, $2, $3, 'job interview')",
        o.user_id, o.companion_id, o.session_id,
    )


async def _incident(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.security_incidents (user_id, companion_id, kind, excerpt) "
        "values ($1, $2, 'instruction_override', 'ignore all previous instructions')",
        o.user_id, o.companion_id,
    )


async def _forgotten_key(conn: asyncpg.Connection, o: Owner) -> object:
    return await conn.execute(
        "insert into public.forgotten_keys (user_id, companion_id, key, forgotten_at) "
        "values ($1, $2, 'secret', now())",
        o.user_id, o.companion_id,
    )


# In dependency order: companions and sessions first, since the rest point at them.
INSERTS: dict[str, Insert] = {
    "companions": _companion,
    "sessions": _session,
    "messages": _message,
    "memories": _memory,
    "personality_state": _personality_state,
    "personality_history": _personality_history,
    "needs": _needs,
    "quirks": _quirk,
    "follow_ups": _follow_up,
    "security_incidents": _incident,
    "forgotten_keys": _forgotten_key,
}
assert tuple(INSERTS) == tuple(sorted(INSERTS, key=PER_USER_TABLES.index))
assert set(INSERTS) == set(PER_USER_TABLES)


def new_owner(user_id: uuid.UUID) -> Owner:
    return Owner(user_id, uuid.uuid4(), uuid.uuid4())


@dataclass(frozen=True)
class World:
    a: Owner
    b: Owner
    dsn: str
    pool: ConnectionPool


@pytest.fixture
async def world(pool: ConnectionPool, db_dsn: str) -> World:
    """Users A and B, each with one row in every per-user table, written as the privileged role."""
    a, b = new_owner(uuid.uuid4()), new_owner(uuid.uuid4())
    async with pool.acquire() as conn:
        for owner in (a, b):
            await conn.execute("insert into public.users (id) values ($1)", owner.user_id)
            for insert in INSERTS.values():
                await insert(conn, owner)
    return World(a, b, db_dsn, pool)


async def privileged_count(pool: ConnectionPool, table: str, user_id: uuid.UUID) -> int:
    column = "id" if table == "users" else "user_id"
    return await pool.fetchval(f"select count(*) from public.{table} where {column} = $1", user_id)


@pytest.mark.parametrize("form", ["claims", "claim.sub"])
async def test_a_user_sees_only_their_own_rows_in_every_per_user_table(
    world: World, form: str
) -> None:
    async with as_authenticated(world.dsn, claims_for(world.a.user_id), form=form) as conn:
        assert await conn.fetchval("select auth.uid()") == world.a.user_id
        for table in PER_USER_TABLES:
            owners = await conn.fetch(f"select distinct user_id from public.{table}")
            assert [r["user_id"] for r in owners] == [world.a.user_id], table
        users = await conn.fetch("select id from public.users")
        assert [r["id"] for r in users] == [world.a.user_id]
        # Asking for B's rows by id finds nothing, and so does a search of their content.
        assert await conn.fetchval(
            "select count(*) from public.memories where user_id = $1", world.b.user_id
        ) == 0
        assert await conn.fetchval(
            "select count(*) from public.companions where id = $1", world.b.companion_id
        ) == 0
    # The privileged role still sees both, so the rows above were there to be hidden.
    for table in PER_USER_TABLES:
        assert await privileged_count(world.pool, table, world.b.user_id) == 1, table


async def test_a_user_can_write_rows_for_themselves(world: World) -> None:
    mine = new_owner(world.a.user_id)
    async with as_authenticated(world.dsn, claims_for(world.a.user_id)) as conn:
        for table, insert in INSERTS.items():
            assert await insert(conn, mine) == "INSERT 0 1", table
        status = await conn.execute(
            "update public.memories set value = 'sushi' where user_id = $1", world.a.user_id
        )
        assert status == "UPDATE 2"


async def test_inserting_a_row_for_another_user_is_refused_in_every_table(world: World) -> None:
    async with as_authenticated(world.dsn, claims_for(world.a.user_id)) as conn:
        for table, insert in INSERTS.items():
            # Aimed at B: B's user id, with a fresh companion/session of B's where one is needed.
            target = Owner(world.b.user_id, world.b.companion_id, world.b.session_id)
            if table == "companions":
                target = Owner(world.b.user_id, uuid.uuid4(), world.b.session_id)
            elif table == "sessions":
                target = Owner(world.b.user_id, world.b.companion_id, uuid.uuid4())
            elif table in ("personality_state", "needs"):
                # These are keyed by (user, companion): use A's companion so that only the
                # policy, not the primary key, can refuse the row.
                target = Owner(world.b.user_id, world.a.companion_id, world.b.session_id)
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                async with conn.transaction():
                    await insert(conn, target)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with conn.transaction():
                await conn.execute("insert into public.users (id) values ($1)", uuid.uuid4())
    for table in PER_USER_TABLES:
        assert await privileged_count(world.pool, table, world.b.user_id) == 1, table


async def test_moving_ones_own_row_to_another_user_is_refused(world: World) -> None:
    async with as_authenticated(world.dsn, claims_for(world.a.user_id)) as conn:
        for table in PER_USER_TABLES:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                async with conn.transaction():
                    await conn.execute(
                        f"update public.{table} set user_id = $1 where user_id = $2",
                        world.b.user_id, world.a.user_id,
                    )
    for table in PER_USER_TABLES:
        assert await privileged_count(world.pool, table, world.a.user_id) == 1, table


async def test_updating_or_deleting_another_users_rows_affects_nothing(world: World) -> None:
    async with as_authenticated(world.dsn, claims_for(world.a.user_id)) as conn:
        for table in PER_USER_TABLES:
            assert await conn.execute(
                f"update public.{table} set user_id = user_id where user_id = $1",
                world.b.user_id,
            ) == "UPDATE 0", table
        # Without a filter, only A's own rows are reachable.
        assert await conn.execute("update public.memories set value = 'x'") == "UPDATE 1"
        assert await conn.execute(
            "update public.users set display_name = 'mallory' where id = $1", world.b.user_id
        ) == "UPDATE 0"
        for table in reversed(PER_USER_TABLES):
            assert await conn.execute(
                f"delete from public.{table} where user_id = $1", world.b.user_id
            ) == "DELETE 0", table
        assert await conn.execute(
            "delete from public.users where id = $1", world.b.user_id
        ) == "DELETE 0"
    for table in PER_USER_TABLES:
        assert await privileged_count(world.pool, table, world.b.user_id) == 1, table
    assert await world.pool.fetchval(
        "select value from public.memories where user_id = $1", world.b.user_id
    ) == "pineapple pizza"
    assert await world.pool.fetchval(
        "select display_name from public.users where id = $1", world.b.user_id
    ) is None


async def test_without_a_sub_claim_nothing_is_visible_or_writable(world: World) -> None:
    for claims in (None, {"role": "authenticated"}, {"sub": "", "role": "authenticated"}):
        async with as_authenticated(world.dsn, claims) as conn:
            assert await conn.fetchval("select auth.uid()") is None
            for table in (*PER_USER_TABLES, "users"):
                assert await conn.fetchval(f"select count(*) from public.{table}") == 0, table
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
                await _memory(conn, world.a)


async def test_a_malformed_sub_claim_fails_instead_of_matching_rows(world: World) -> None:
    async with as_authenticated(world.dsn, {"sub": "' or 1=1 --"}) as conn:
        with pytest.raises(asyncpg.InvalidTextRepresentationError):
            await conn.fetchval("select count(*) from public.memories")


async def test_the_anon_role_cannot_read_per_user_tables(world: World) -> None:
    conn = await asyncpg.connect(world.dsn)
    try:
        for table in (*PER_USER_TABLES, "users"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute("set local role anon")
                    await conn.fetchval(f"select count(*) from public.{table}")
    finally:
        await conn.close()


async def test_every_table_with_a_user_id_has_an_owner_only_policy(
    world: World,
) -> None:
    """Guards tables added later: each one carrying user_id must be covered by RLS too."""
    tables = {
        r["table_name"]
        for r in await world.pool.fetch(
            "select table_name from information_schema.columns "
            "where table_schema = 'public' and column_name = 'user_id'"
        )
    }
    assert set(PER_USER_TABLES) <= tables
    protected = {
        r["relname"]
        for r in await world.pool.fetch(
            "select relname from pg_class where relrowsecurity "
            "and relnamespace = 'public'::regnamespace"
        )
    }
    policies = {
        r["tablename"]: r["qual"]
        for r in await world.pool.fetch(
            "select tablename, qual from pg_policies where schemaname = 'public' "
            "and 'authenticated' = any(roles)"
        )
    }
    for table in sorted(tables):
        assert table in protected, f"{table} has user_id but row-level security is off"
        assert "auth.uid()" in (policies.get(table) or ""), f"{table} has no owner policy"
    # Tables this file does not seed are still checked for leaks, as far as their rows allow.
    async with as_authenticated(world.dsn, claims_for(world.a.user_id)) as conn:
        for table in sorted(tables):
            assert await conn.fetchval(
                f"select count(*) from public.{table} where user_id is distinct from $1",
                world.a.user_id,
            ) == 0, table


async def test_every_policy_calls_auth_uid_once_per_statement_not_once_per_row(
    pool: ConnectionPool, db_dsn: str
) -> None:
    """`(select auth.uid())` is an InitPlan evaluated once; a bare `auth.uid()` runs per row."""
    rows = await pool.fetch(
        "select tablename, policyname, coalesce(qual, '') as qual, "
        "coalesce(with_check, '') as with_check from pg_policies where schemaname = 'public'"
    )
    assert rows
    for row in rows:
        for clause in (row["qual"], row["with_check"]):
            per_row = clause.replace("( SELECT auth.uid() AS uid)", "")
            assert "auth.uid()" not in per_row, (row["tablename"], row["policyname"], clause)
        assert "SELECT auth.uid()" in row["qual"] + row["with_check"], row["policyname"]
    # As a Supabase client, the planner shows the call once, as an InitPlan above the scan.
    async with as_authenticated(db_dsn, claims_for(uuid.uuid4())) as conn:
        for table in ("messages", "memories", "users"):
            plan = "\n".join(r[0] for r in await conn.fetch(f"explain select * from {table}"))
            assert "InitPlan" in plan, plan
