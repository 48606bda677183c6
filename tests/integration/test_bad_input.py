"""Hostile and malformed input against the memory path, property-based, on the real stack.

Whatever text arrives (SQL-looking, control characters, invalid UTF-8, huge), a memory write
either stores it literally (after `clean_text` normalization) or refuses it with InvalidInput,
and nothing belonging to anyone else changes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from core.dates import find_dates
from core.errors import InvalidIdentity, InvalidInput
from core.memory_records import Episode, explicit_content, normalize_key
from core.validators import (
    MAX_MEMORY_KEY_CHARS,
    MAX_MEMORY_VALUE_CHARS,
    MAX_UTTERANCE_CHARS,
    clean_text,
)
from infrastructure.connection_pool import ConnectionPool
from rag_system.engine import RetrievalEngine
from rag_system.scoring import ScoredMemory
from tests.support.memory_stack import (
    MemoryStack,
    create_companion,
    create_user,
    key_versions,
    memory_stack,
)
from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import RedisProcess

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

SQL_FRAGMENTS = [
    "'", "''", '"', ";", "--", "/*", "*/", "\\", "%", "_", "$1", "$$", "::text", "NULL",
    "Robert'); DROP TABLE students;--", "' OR '1'='1", "1; DELETE FROM public.memories",
    "'; DROP TABLE public.memories; --", "UNION SELECT * FROM public.users --",
    "'); TRUNCATE public.messages; --", "E'\\x00'", "pg_sleep(10)", "\\copy users to stdout",
    "$tag$ select 1 $tag$", "{\"sub\": \"x\"}", "<script>alert(1)</script>",
]
ODD_CHARS = st.characters(categories=["Cc", "Cf", "Cs", "Zs", "Zl", "Mn", "So"])
TEXTS = st.lists(
    st.one_of(
        st.sampled_from(SQL_FRAGMENTS),
        st.text(max_size=30),
        ODD_CHARS,
        st.sampled_from(
            ["ü", "é", "\u0301", "ﬁ", "😀", "\U0001f468\u200d\U0001f469", "मैं"]
        ),
    ),
    min_size=1,
    max_size=12,
).map("".join)


@dataclass
class People:
    me: uuid.UUID
    companion: uuid.UUID
    bystander: uuid.UUID
    bystander_memory: uuid.UUID


class Clock:
    def __call__(self) -> datetime:
        return NOW


@pytest.fixture
async def stack(
    pool: ConnectionPool, make_settings, redis_server: RedisProcess
) -> AsyncIterator[MemoryStack]:
    settings = make_settings(redis_enabled=True, redis_url=redis_server.url)
    async with OpenAIStubServer() as server, memory_stack(
        pool=pool, settings=settings, server=server, clock=Clock()
    ) as built:
        yield built


@pytest.fixture
async def people(stack: MemoryStack) -> People:
    me = await create_user(stack.pool)
    companion = await create_companion(stack.pool, me, "Veda")
    bystander = await create_user(stack.pool)
    theirs = await stack.memory.remember(bystander, None, "FACT", "secret", "pineapple pizza")
    return People(me, companion, bystander, theirs.id)


async def assert_bystander_untouched(stack: MemoryStack, people: People) -> None:
    rows = await stack.pool.fetch(
        "select id, value, superseded_at from public.memories where user_id = $1",
        people.bystander,
    )
    assert [(r["id"], r["value"], r["superseded_at"]) for r in rows] == [
        (people.bystander_memory, "pineapple pizza", None)
    ]


def expected_value(raw: str) -> str | None:
    """What remember() must store for `raw`, or None when it must refuse it."""
    try:
        cleaned = clean_text(raw, field="value", max_chars=MAX_MEMORY_VALUE_CHARS)
    except InvalidInput:
        return None
    return cleaned or None


@PROPERTY
@given(value=TEXTS)
async def test_any_value_is_stored_literally_or_refused_and_reads_back_equal(
    stack: MemoryStack, people: People, value: str
) -> None:
    expected = expected_value(value)
    # Relative dates are rewritten on purpose ("tomorrow" -> a date); that is not corruption.
    assume(expected is None or not find_dates(expected, now=NOW))
    key = f"note_{uuid.uuid4().hex[:8]}"
    if expected is None:
        with pytest.raises(InvalidInput) as refused:
            await stack.memory.remember(people.me, people.companion, "FACT", key, value)
        assert refused.value.suggestion
    else:
        saved = await stack.memory.remember(people.me, people.companion, "FACT", key, value)
        assert saved.value == expected and saved.content == explicit_content(key, expected)
        current = {m.key: m for m in await stack.memory.current(people.me, people.companion)}
        assert current[key].value == expected and current[key].id == saved.id
        stored = await stack.pool.fetchval(
            "select value from public.memories where id = $1", saved.id
        )
        assert stored == expected
    await assert_bystander_untouched(stack, people)
    assert await stack.pool.fetchval("select to_regclass('public.memories')::text") == "memories"


@PROPERTY
@given(key=TEXTS)
async def test_any_key_is_normalized_or_refused_and_never_reaches_another_scope(
    stack: MemoryStack, people: People, key: str
) -> None:
    try:
        expected = normalize_key(clean_text(key, field="key", max_chars=MAX_MEMORY_KEY_CHARS))
    except InvalidInput:
        expected = ""
    if not expected:
        with pytest.raises(InvalidInput):
            await stack.memory.remember(people.me, None, "FACT", key, "a value")
    else:
        saved = await stack.memory.remember(people.me, None, "FACT", key, f"v {uuid.uuid4()}")
        assert saved.key == expected and saved.user_id == people.me
        history = await key_versions(stack.pool, people.me, None, "FACT", key)
        assert history[0].id == saved.id
        assert await key_versions(stack.pool, people.bystander, None, "FACT", key) == []
    await assert_bystander_untouched(stack, people)


@PROPERTY
@given(
    key_len=st.integers(MAX_MEMORY_KEY_CHARS + 1, 3 * MAX_MEMORY_KEY_CHARS),
    value_len=st.integers(MAX_MEMORY_VALUE_CHARS + 1, 3 * MAX_MEMORY_VALUE_CHARS),
    fill=st.sampled_from(["k", "é", "😀", "'; drop table x; --"]),
    which=st.sampled_from(["key", "value"]),
)
async def test_oversized_keys_and_values_are_refused_with_the_limit_and_nothing_is_written(
    stack: MemoryStack, people: People, key_len: int, value_len: int, fill: str, which: str
) -> None:
    before = await stack.pool.fetchval(
        "select count(*) from public.memories where user_id = $1", people.me
    )
    key = (fill * key_len)[:key_len] if which == "key" else "ok_key"
    value = (fill * value_len)[:value_len] if which == "value" else "ok value"
    with pytest.raises(InvalidInput) as refused:
        await stack.memory.remember(people.me, None, "FACT", key, value)
    limit = MAX_MEMORY_KEY_CHARS if which == "key" else MAX_MEMORY_VALUE_CHARS
    assert f"the limit is {limit}" in str(refused.value)
    after = await stack.pool.fetchval(
        "select count(*) from public.memories where user_id = $1", people.me
    )
    assert after == before
    await assert_bystander_untouched(stack, people)


@PROPERTY
@given(category=TEXTS)
async def test_any_category_is_accepted_as_a_name_or_refused(
    stack: MemoryStack, people: People, category: str
) -> None:
    try:
        saved = await stack.memory.remember(people.me, None, category, "k", f"v {uuid.uuid4()}")
    except InvalidInput as refused:
        assert refused.suggestion
    else:
        assert saved.category is not None and re.fullmatch(r"[A-Z][A-Z0-9_]*", saved.category)
        listed = await stack.memory.current(people.me, None, category=category)
        assert [m.id for m in listed] == [saved.id]
    await assert_bystander_untouched(stack, people)


@PROPERTY
@given(
    turn=st.one_of(
        TEXTS,
        st.binary(max_size=200),
        st.integers(1, 3 * MAX_UTTERANCE_CHARS).map(lambda n: ("a\x00b'" * n)[:n]),
    )
)
async def test_logged_turns_are_cleaned_truncated_or_skipped_never_corrupted(
    stack: MemoryStack, people: People, turn: str | bytes
) -> None:
    user = await create_user(stack.pool)
    stack.memory.log_turn(user, None, None, "user", turn)  # type: ignore[arg-type]
    await stack.settle()
    rows = await stack.pool.fetch(
        "select content from public.memories where user_id = $1 and kind = 'episodic'", user
    )
    expected = clean_text(turn, field="turn", max_chars=MAX_UTTERANCE_CHARS, truncate=True)
    if rows:
        [row] = rows
        assert row["content"] == expected
        assert len(row["content"]) <= MAX_UTTERANCE_CHARS
    else:
        # Skipped only when nothing speakable is left.
        assert not any(ch.isalnum() for ch in expected)
    assert stack.batcher.stats()["rejected"] == 0
    await assert_bystander_untouched(stack, people)


@PROPERTY
@given(value=TEXTS, other_first=st.booleans())
async def test_one_users_memories_never_show_up_for_another(
    stack: MemoryStack, people: People, value: str, other_first: bool
) -> None:
    assume(expected_value(value) is not None)
    key = f"k_{uuid.uuid4().hex[:8]}"
    writers = [people.me, people.bystander]
    if other_first:
        writers.reverse()
    saved = {}
    for user in writers:
        saved[user] = await stack.memory.remember(user, None, "FACT", key, f"{value} {user}")
    mine = await stack.memory.current(people.me, None)
    assert all(m.user_id == people.me for m in mine)
    assert saved[people.bystander].id not in {m.id for m in mine}
    # Forgetting by another user's memory id removes nothing of theirs.
    gone = await stack.memory.forget(people.me, None, memory_id=saved[people.bystander].id)
    assert gone.versions == 0
    assert await stack.pool.fetchval(
        "select count(*) from public.memories where id = $1", saved[people.bystander].id
    ) == 1
    await stack.memory.forget(people.bystander, None, key=key)


async def test_a_memory_for_an_unknown_user_is_refused_as_an_identity_error(
    stack: MemoryStack, people: People
) -> None:
    with pytest.raises(InvalidIdentity):
        await stack.memory.remember(uuid.uuid4(), None, "FACT", "pet", "a cat")
    await assert_bystander_untouched(stack, people)


@pytest.mark.parametrize("value", ["", "   ", "\x00\x01\x02", "\r\n\t"])
async def test_empty_values_are_refused(
    stack: MemoryStack, people: People, value: str
) -> None:
    with pytest.raises(InvalidInput, match="needs a key and a value"):
        await stack.memory.remember(people.me, None, "FACT", "pet", value)


# --- retrieval -------------------------------------------------------------------------------

BYSTANDER_SECRETS = [
    "my pineapple pizza secret is the bank pin 4921",
    "I told nobody that my zebra password is hunter2",
    "'; drop table public.memories; -- is my favourite joke",
]
QUERY_WORDS = st.sampled_from(
    ["pizza", "pineapple", "secret", "password", "zebra", "bank", "pin", "hunter2", "joke",
     "what", "did", "other", "users", "tell", "you", "*", "&", "|", "!", ":*", "<->", "(", ")"]
)
QUERIES = st.one_of(
    TEXTS,
    st.lists(QUERY_WORDS, min_size=1, max_size=12).map(" ".join),
    st.integers(1, 20_000).map(lambda n: ("pizza '; drop \x00 " * n)[:n]),
)


@pytest.fixture
async def engine(stack: MemoryStack) -> AsyncIterator[RetrievalEngine]:
    built = RetrievalEngine(pool=stack.pool, embedder=stack.embedder, settings=stack.settings)
    yield built
    await built.aclose()


@pytest.fixture
async def searchable(stack: MemoryStack, people: People) -> People:
    """Both people hold memories on the same topics; only the bystander's hold the secrets."""
    await stack.memory.remember(people.me, people.companion, "FOOD", "pizza", "margherita")
    await stack.memory.remember(people.me, None, "FACT", "pet", "a dog called Rex")
    await stack.memory.import_episodes(
        people.me, people.companion,
        [Episode("user", "I had pizza with my sister yesterday", NOW)],
    )
    for index, secret in enumerate(BYSTANDER_SECRETS):
        await stack.memory.remember(people.bystander, None, "FACT", f"secret_{index}", secret)
    await stack.memory.import_episodes(
        people.bystander, None, [Episode("user", text, NOW) for text in BYSTANDER_SECRETS]
    )
    return people


def assert_only_mine(results: list[ScoredMemory], people: People) -> None:
    for found in results:
        memory = found.memory
        assert memory.user_id == people.me
        assert memory.companion_id in (people.companion, None)
        assert "hunter2" not in memory.content and "4921" not in memory.content


async def test_search_finds_ones_own_memory_and_never_the_bystanders(
    engine: RetrievalEngine, searchable: People
) -> None:
    results = await engine.search(
        searchable.me, searchable.companion, "pineapple pizza secret bank pin", k=20, now=NOW
    )
    assert results, "the positive control must find something"
    assert any("margherita" in r.memory.content or "pizza" in r.memory.content for r in results)
    assert_only_mine(results, searchable)


@PROPERTY
@given(query=QUERIES, recent=st.lists(TEXTS, max_size=3), k=st.integers(1, 100))
async def test_search_never_raises_on_any_text_and_never_returns_another_users_rows(
    engine: RetrievalEngine, searchable: People, query: str, recent: list[str], k: int
) -> None:
    results = await engine.search(
        searchable.me, searchable.companion, query, k=k, recent_turns=recent, now=NOW
    )
    assert isinstance(results, list) and len(results) <= k
    assert_only_mine(results, searchable)


@pytest.mark.parametrize("k", [0, -1, 101, 10**9])
async def test_search_sizes_outside_the_bounds_are_refused_clearly(
    engine: RetrievalEngine, searchable: People, k: int
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await engine.search(searchable.me, searchable.companion, "pizza", k=k, now=NOW)
    assert refused.value.suggestion
