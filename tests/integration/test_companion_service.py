from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from core.errors import InvalidIdentity, InvalidInput
from infrastructure.connection_pool import ConnectionPool
from infrastructure.redis_cache import RedisCache
from services.people.companion_service import CompanionService
from services.people.onboarding_service import OnboardingData
from services.persona.pad import BigFive

pytestmark = pytest.mark.integration


async def new_user(pool: ConnectionPool) -> uuid.UUID:
    """A users row, as UserService.ensure would make it on first contact."""
    user = uuid.uuid4()
    await pool.execute("insert into users (id) values ($1)", user)
    return user


@pytest.fixture
async def cache(make_settings):
    cache = await RedisCache.create(make_settings())
    yield cache
    await cache.aclose()


@pytest.fixture
def service(pool: ConnectionPool, cache, make_settings) -> CompanionService:
    return CompanionService(pool=pool, cache=cache, settings=make_settings())


async def test_the_first_resolve_creates_the_default_companion_named_in_settings(
    pool: ConnectionPool, make_settings
) -> None:
    settings = make_settings(default_companion_name="Mira")
    cache = await RedisCache.create(settings)
    user = await new_user(pool)
    first = await CompanionService(pool=pool, cache=cache, settings=settings).resolve(user)
    # Another worker (own cache) finds the same companion rather than making a second one.
    other_cache = await RedisCache.create(settings)
    again = await CompanionService(pool=pool, cache=other_cache, settings=settings).resolve(user)
    assert first.name == "Mira" and first.is_default
    assert again.id == first.id
    assert await pool.fetchval("select count(*) from companions where user_id = $1", user) == 1
    await cache.aclose()
    await other_cache.aclose()


async def test_a_user_without_a_users_row_is_refused_before_anything_is_written(
    service: CompanionService, pool: ConnectionPool
) -> None:
    ghost = uuid.uuid4()
    with pytest.raises(InvalidIdentity) as caught:
        await service.resolve(ghost)
    assert "UserService.ensure" in caught.value.suggestion
    with pytest.raises(InvalidIdentity):
        await service.create(ghost, name="Luna")
    assert await pool.fetchval("select count(*) from companions where user_id = $1", ghost) == 0


async def test_concurrent_first_resolves_make_exactly_one_default(
    service: CompanionService, pool: ConnectionPool
) -> None:
    user = await new_user(pool)
    results = await asyncio.gather(*(service.resolve(user) for _ in range(5)))
    assert len({c.id for c in results}) == 1
    assert await pool.fetchval("select count(*) from companions where user_id = $1", user) == 1


def requested(attributes: dict[str, str] | None, metadata: str | None) -> str | None:
    data = OnboardingData.from_participant(metadata, attributes)
    return data.companion if data is not None else None


async def test_a_participant_attribute_routes_the_session_to_the_named_companion(
    service: CompanionService, pool: ConnectionPool
) -> None:
    user = await new_user(pool)
    veda = await service.resolve(user)
    luna = await service.create(user, name="Luna", character="mentor")
    by_name = requested({"companion": "luna"}, None)
    assert (await service.resolve(user, requested=by_name)).id == luna.id
    by_id = requested({"companion_id": str(veda.id)}, None)
    assert (await service.resolve(user, requested=by_id)).id == veda.id
    from_metadata = requested({}, json.dumps({"companion_name": "Luna"}))
    assert (await service.resolve(user, requested=from_metadata)).id == luna.id
    assert (await service.resolve(user, requested=None)).id == veda.id


async def test_an_unknown_or_foreign_companion_is_refused(
    service: CompanionService, pool: ConnectionPool
) -> None:
    alice, bob = await new_user(pool), await new_user(pool)
    alices = await service.create(alice, name="Orion")
    await service.resolve(bob)
    with pytest.raises(InvalidIdentity):
        await service.resolve(bob, requested="Orion")
    with pytest.raises(InvalidIdentity):
        await service.resolve(bob, requested=str(alices.id))
    assert await service.get(bob, alices.id) is None


async def test_names_are_unique_per_user_ignoring_case_but_free_across_users(
    service: CompanionService, pool: ConnectionPool
) -> None:
    alice, bob = await new_user(pool), await new_user(pool)
    await service.create(alice, name="Veda")
    with pytest.raises(InvalidInput):
        await service.create(alice, name="Veda")
    with pytest.raises(InvalidInput):
        await service.create(alice, name="  veda ")
    other = await service.create(bob, name="Veda")
    assert other.user_id == bob
    assert [c.name for c in await service.list(alice)] == ["Veda"]


async def test_the_first_companion_is_the_default_and_a_new_default_replaces_it(
    service: CompanionService, pool: ConnectionPool
) -> None:
    user = await new_user(pool)
    first = await service.create(user, name="Ada")
    second = await service.create(user, name="Ben")
    assert first.is_default and not second.is_default
    third = await service.create(user, name="Cy", is_default=True)
    assert third.is_default
    assert (await service.resolve(user)).id == third.id
    assert await pool.fetchval(
        "select count(*) from companions where user_id = $1 and is_default", user) == 1
    # Resolving never invents the settings' default once the user has companions.
    assert {c.name for c in await service.list(user)} == {"Ada", "Ben", "Cy"}


async def test_a_companion_keeps_its_character_voice_and_big_five(
    service: CompanionService, pool: ConnectionPool, make_settings
) -> None:
    user = await new_user(pool)
    traits = BigFive(openness=0.9, conscientiousness=0.2, extraversion=0.15,
                     agreeableness=0.8, neuroticism=0.55)
    made = await service.create(user, name="Zoë", character="Sibling", persona="Loves jazz.",
                                language="ur", voice="v_abc", response_length="medium",
                                traits=traits)
    fresh_cache = await RedisCache.create(make_settings())
    fresh = CompanionService(pool=pool, cache=fresh_cache, settings=make_settings())
    loaded = await fresh.get(user, made.id)
    await fresh_cache.aclose()
    assert loaded == made
    assert loaded.traits == traits
    assert loaded.character == "sibling" and loaded.language == "ur"


@pytest.mark.parametrize(
    "fields",
    [
        {"name": ""},
        {"name": "7up"},
        {"name": "x" * 41},
        {"name": str(uuid.uuid4())},
        {"name": "Ok", "response_length": "endless"},
        {"name": "Ok", "language": "english please"},
        {"name": "Ok", "character": " "},
    ],
)
async def test_invalid_companion_fields_are_refused_with_a_suggestion(
    service: CompanionService, fields: dict
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await service.create(uuid.uuid4(), **fields)
    assert caught.value.suggestion


async def test_an_utterance_that_opens_with_a_name_addresses_that_companion(
    service: CompanionService, pool: ConnectionPool
) -> None:
    user = await new_user(pool)
    veda = await service.resolve(user)
    luna = await service.create(user, name="Luna")
    mira_lee = await service.create(user, name="Mira Lee")
    mira = await service.create(user, name="Mira")
    everyone = await service.list(user)
    cases = {
        "Veda, how are you?": veda,
        "veda!": veda,
        "Hey Luna what's up": luna,
        "ok luna, tell me a story": luna,
        "Mira Lee, are you there?": mira_lee,
        "Mira, hi": mira,
        "Vedanta is a philosophy": None,
        "Veda is a nice name": None,
        "I talked to Luna yesterday": None,
        "": None,
    }
    for text, expected in cases.items():
        found = service.addressed_by_name(text, everyone)
        assert (found.id if found else None) == (expected.id if expected else None), text


async def test_a_new_companion_shows_up_in_the_cached_list_at_once(
    pool: ConnectionPool, make_settings, redis_server
) -> None:
    settings = make_settings(redis_enabled=True, redis_url=redis_server.url)
    cache = await RedisCache.create(settings)
    service = CompanionService(pool=pool, cache=cache, settings=settings)
    user = await new_user(pool)
    await service.resolve(user)
    assert len(await service.list(user)) == 1
    await service.create(user, name="Nova")
    assert {c.name for c in await service.list(user)} == {"Veda", "Nova"}
    await cache.delete(f"companions:{user}")
    await cache.aclose()
