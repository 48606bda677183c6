"""Everything about one person, over real Postgres: the operator's `manage.py export` and
`manage.py erase` as subprocesses, and an erasure that the database being away refuses whole.

A person is seeded in every table that holds data about them, plus a turn spooled to disk
during an outage; another person is seeded beside them and must come through untouched.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.config import Settings
from core.errors import StorageUnavailable
from infrastructure.connection_pool import ConnectionPool
from services.composition import Services, build_services
from services.people.person_data import ERASED_TABLES
from tests.conftest import PostgresFreezer
from tests.integration.test_manage import manage
from tests.support.memory_stack import memory_stack
from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import PostgresProcess

pytestmark = pytest.mark.integration


async def seed(pool: ConnectionPool, words: str) -> uuid.UUID:
    """A person with a row in every table about them, each carrying `words`."""
    user = uuid.uuid4()
    await pool.execute(
        "insert into public.users (id, display_name, interests) values ($1, $2, $3)",
        user, f"name {words}", [f"interest {words}"],
    )
    companion = await pool.fetchval(
        "insert into public.companions (user_id, name, profile_summary) "
        "values ($1, 'Veda', $2) returning id", user, f"summary {words}",
    )
    session = await pool.fetchval(
        "insert into public.sessions (user_id, companion_id, summary) values ($1, $2, $3) "
        "returning id", user, companion, f"session {words}",
    )
    await pool.execute(
        "insert into public.messages (session_id, user_id, companion_id, role, content) "
        "values ($1, $2, $3, 'user', $4)", session, user, companion, f"message {words}",
    )
    for kind, key in (("explicit", "fact"), ("episodic", None)):
        await pool.execute(
            "insert into public.memories (user_id, companion_id, kind, category, key, value, "
            "content, content_hash) values ($1, $2, $3, $4, $5, $6, $6, md5($6))",
            user, companion, kind, "FACT" if key else None, key, f"{kind} {words}",
        )
    await pool.execute(
        "insert into public.follow_ups (user_id, companion_id, session_id, topic) "
        "values ($1, $2, $3, $4)", user, companion, session, f"follow-up {words}",
    )
    await pool.execute(
        "insert into public.personality_state (user_id, companion_id) values ($1, $2)",
        user, companion,
    )
    await pool.execute(
        "insert into public.personality_history (user_id, companion_id, pleasure, arousal, "
        "dominance, emotion, reason) values ($1, $2, 0, 0, 0, 'calm', 'user_turn')",
        user, companion,
    )
    await pool.execute(
        "insert into public.quirks (user_id, companion_id, name, description) "
        "values ($1, $2, 'opener:hey', $3)", user, companion, f"quirk {words}",
    )
    await pool.execute(
        "insert into public.needs (user_id, companion_id, need) values ($1, $2, 'social')",
        user, companion,
    )
    await pool.execute(
        "insert into public.memory_term_stats (user_id, lexeme, docs) values ($1, $2, 2)",
        user, words.split()[0],
    )
    await pool.execute(
        "insert into public.forgotten_keys (user_id, companion_id, key, forgotten_at) "
        "values ($1, $2, $3, now())", user, companion, f"forgotten {words}",
    )
    await pool.execute(
        "insert into public.security_incidents (user_id, kind, excerpt) "
        "values ($1, 'instruction_override', $2)", user, f"incident {words}",
    )
    return user


@pytest.fixture
def settings(make_settings, db_dsn: str) -> Settings:
    return make_settings(batch_max_attempts=1, database_url=db_dsn)


@pytest.fixture
async def people(
    pool: ConnectionPool, settings: Settings, postgres: PostgresProcess
) -> AsyncIterator[tuple[uuid.UUID, uuid.UUID]]:
    """Ada (to export and erase) and Bo (a bystander); one of Ada's turns is in the spool."""
    ada = await seed(pool, "adasecret words")
    bo = await seed(pool, "bosecret words")
    async with OpenAIStubServer() as server, memory_stack(
        pool=pool, settings=settings, server=server
    ) as stack:
        with postgres.down():
            stack.memory.log_turn(ada, None, None, "user", "spooled adasecret turn")
            await stack.settle()
        assert stack.batcher.stats()["spooled"] == 1
    yield ada, bo


def env(db_dsn: str, settings: Settings) -> dict[str, str]:
    return {"DATABASE_URL": db_dsn, "BATCH_SPOOL_DIR": str(settings.batch_spool_dir)}


async def rows_of(pool: ConnectionPool, user: uuid.UUID) -> dict[str, int]:
    return {
        table: int(await pool.fetchval(
            f"select count(*) from public.{table} where user_id = $1", user
        ))
        for table in ERASED_TABLES
    }


async def test_export_writes_everything_about_the_person_and_nothing_of_anyone_else(
    people: tuple[uuid.UUID, uuid.UUID], db_dsn: str, settings: Settings, tmp_path: Path
) -> None:
    ada, _ = people
    out = tmp_path / "ada.json"
    done = manage("export", "--user", str(ada), "--out", str(out), cwd=tmp_path,
                  **env(db_dsn, settings))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"exported user {ada} to {out} (1 conversations)"
    assert out.stat().st_mode & 0o777 == 0o600
    text = out.read_text(encoding="utf-8")
    for what in ("name", "interest", "summary", "session", "message", "explicit", "episodic",
                 "follow-up", "quirk", "forgotten", "incident"):
        assert f"{what} adasecret words" in text, what
    assert "spooled adasecret turn" in text and "adasecret" in json.loads(text)["memory_words"][
        0]["lexeme"]
    assert "bosecret" not in text
    again = manage("export", "--user", str(ada), "--out", str(out), cwd=tmp_path,
                   **env(db_dsn, settings))
    assert again.returncode == 2 and "exists already" in again.stderr


async def test_erase_asks_for_yes_then_erases_everything_and_the_spool_brings_nothing_back(
    people: tuple[uuid.UUID, uuid.UUID], pool: ConnectionPool, db_dsn: str,
    settings: Settings, tmp_path: Path,
) -> None:
    ada, bo = people
    bo_before = await rows_of(pool, bo)
    asked = manage("erase", "--user", str(ada), cwd=tmp_path, **env(db_dsn, settings))
    assert asked.returncode == 1 and "add --yes" in asked.stderr
    assert asked.stdout.startswith(f"would erase for user {ada}: kept_memories 1")
    assert (await rows_of(pool, ada))["messages"] == 1

    erased = manage("erase", "--user", str(ada), "--yes", cwd=tmp_path, **env(db_dsn, settings))
    assert erased.returncode == 0, erased.stderr
    assert erased.stdout.startswith(f"erased everything about user {ada}: ")
    assert set((await rows_of(pool, ada)).values()) == {0}
    user = await pool.fetchrow("select * from public.users where id = $1", ada)
    assert user is not None and user["display_name"] is None and user["interests"] == []
    assert await pool.fetchval(
        "select profile_summary from public.companions where user_id = $1", ada) is None
    assert await pool.fetchval(
        "select excerpt from public.security_incidents where user_id = $1", ada) == ""
    assert await rows_of(pool, bo) == bo_before

    # A worker starting later replays the spool: nothing of Ada comes back.
    services = await build_services(settings)
    await services.aclose()
    assert set((await rows_of(pool, ada)).values()) == {0}
    exported = manage("export", "--user", str(ada), cwd=tmp_path, **env(db_dsn, settings))
    assert exported.returncode == 0 and "adasecret" not in exported.stdout

    unknown = manage("erase", "--user", str(uuid.uuid4()), "--yes", cwd=tmp_path,
                     **env(db_dsn, settings))
    assert unknown.returncode == 2 and "no user" in unknown.stderr


@pytest.fixture
async def services(make_settings, db_dsn: str) -> AsyncIterator[Services]:
    built = await build_services(make_settings(
        database_url=db_dsn, db_command_timeout_s=0.5, db_acquire_timeout_s=0.5,
    ))
    try:
        yield built
    finally:
        await built.aclose()


async def test_an_erasure_while_the_database_hangs_is_refused_and_erases_nothing(
    services: Services, pool: ConnectionPool, postgres_freezer: PostgresFreezer
) -> None:
    ada = await seed(pool, "adasecret words")
    before = await rows_of(pool, ada)
    postgres_freezer.freeze()
    with pytest.raises(StorageUnavailable) as refused:
        await services.person_data.erase(ada)
    postgres_freezer.thaw()
    assert refused.value.retryable and "try again" in refused.value.suggestion
    assert await rows_of(pool, ada) == before
    erased = await services.person_data.erase(ada)
    assert erased["memories"] == 2 and set((await rows_of(pool, ada)).values()) == {0}
