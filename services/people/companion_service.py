"""Companions: each person may have several, each with its own name, character and voice.

A companion's name is its identity within one user (unique, case-insensitively). The room
participant's attributes or metadata choose the companion for a session (read by
`OnboardingData`); on channels that cannot send those, an utterance that opens with a
companion's name addresses that companion.
"""

from __future__ import annotations

import logging
import re
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.config import Settings
from core.errors import InvalidIdentity, InvalidInput
from core.validators import clean_text
from infrastructure.cache import Cache
from infrastructure.connection_pool import ConnectionPool
from services.persona.pad import TRAIT_NAMES, BigFive

logger = logging.getLogger(__name__)

MAX_NAME_CHARS = 40
MAX_CHARACTER_CHARS = 30
MAX_PERSONA_CHARS = 4_000
MAX_VOICE_CHARS = 80
RESPONSE_LENGTHS = ("short", "medium", "long")
COMPANIONS_TTL_S = 600

_NAME_RE = re.compile(r"^[^\W\d_][\w .'\-]*$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
# Words people put before a name when they call someone: "hey Veda", "ok Veda,".
_CALL_WORDS = r"(?:hey|hi|hello|ok|okay|yo|oh|dear)"

_COLUMNS = (
    "id, user_id, name, character, persona, language, voice, response_length, openness, "
    "conscientiousness, extraversion, agreeableness, neuroticism, is_default"
)


@dataclass(frozen=True)
class Companion:
    """One companion of one user.

    Attributes:
        id: primary key; memories, mood, history and follow-ups are keyed by it and user_id.
        user_id: the person it belongs to.
        name: its identity for that person (unique per user, case-insensitively).
        character: the role it plays: friend, partner, parent, sibling, child, mentor...
        persona: free text describing it, for the instructions.
        language: BCP 47 language code it speaks.
        voice: TTS voice id, or None for the configured default.
        response_length: 'short', 'medium' or 'long'.
        traits: Big Five, fixed at creation.
        is_default: the companion a session gets when the client names none.
    """

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    character: str
    persona: str
    language: str
    voice: str | None
    response_length: str
    traits: BigFive
    is_default: bool

    @classmethod
    def from_row(cls, row: asyncpg.Record | Mapping[str, Any]) -> Companion:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            name=row["name"],
            character=row["character"],
            persona=row["persona"],
            language=row["language"],
            voice=row["voice"],
            response_length=row["response_length"],
            # Stored as real: round so 0.6 reads back as 0.6, not 0.6000000238.
            traits=BigFive(**{t: round(float(row[t]), 4) for t in TRAIT_NAMES}),
            is_default=row["is_default"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "user_id": str(self.user_id),
            "name": self.name,
            "character": self.character,
            "persona": self.persona,
            "language": self.language,
            "voice": self.voice,
            "response_length": self.response_length,
            "traits": self.traits.as_dict(),
            "is_default": self.is_default,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Companion:
        return cls(
            id=uuid.UUID(data["id"]),
            user_id=uuid.UUID(data["user_id"]),
            name=data["name"],
            character=data["character"],
            persona=data["persona"],
            language=data["language"],
            voice=data["voice"],
            response_length=data["response_length"],
            traits=BigFive(**data["traits"]),
            is_default=data["is_default"],
        )


def _fold(text: str) -> str:
    """Case- and accent-insensitive form used to compare names ("Zoë" == "zoe")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def clean_name(raw: object) -> str:
    """A companion name: 1-40 characters, starting with a letter, single-spaced."""
    name = " ".join(clean_text(raw, field="companion name", max_chars=MAX_NAME_CHARS).split())
    if not name or not _NAME_RE.match(name):
        raise InvalidInput(
            "a companion name must start with a letter and use letters, digits, spaces, "
            "apostrophes, dots or hyphens",
            suggestion="choose a name such as Veda or Mira",
        )
    try:
        uuid.UUID(name)
    except ValueError:
        return name
    raise InvalidInput(
        "a companion name may not be a UUID", suggestion="choose a name such as Veda or Mira"
    )


def _unknown_user() -> InvalidIdentity:
    # The users row belongs to UserService, which also tells onboarding the user is new.
    return InvalidIdentity(
        "this user does not exist yet",
        suggestion="call UserService.ensure(user_id) before resolving or creating companions",
    )


class CompanionService:
    """Creates, lists and resolves a user's companions; reads are cached per user.

    Args:
        pool: the shared connection pool.
        cache: the shared cache; the list of a user's companions is kept under
            `companions:<user_id>` and dropped whenever it changes.
        settings: `default_companion_name` names the companion made on first use.
    """

    def __init__(self, *, pool: ConnectionPool, cache: Cache, settings: Settings) -> None:
        self._pool = pool
        self._cache = cache
        self._settings = settings

    async def resolve(self, user_id: uuid.UUID, *, requested: str | None = None) -> Companion:
        """The companion for a session.

        Args:
            user_id: the session's user.
            requested: a companion name or id from the participant's attributes or metadata;
                None gives the user's default, created from `settings.default_companion_name`
                on first use.

        Raises:
            InvalidIdentity: `requested` names no companion of this user, or the user row does
                not exist (UserService.ensure creates it).
        """
        companions = await self.list(user_id)
        if not companions:
            companions = [await self._ensure_default(user_id)]
        if requested is None or not requested.strip():
            return next((c for c in companions if c.is_default), companions[0])
        found = self.find(requested, companions)
        if found is None:
            names = ", ".join(c.name for c in companions)
            raise InvalidIdentity(
                "the requested companion does not exist for this user",
                suggestion=f"ask for one of: {names}; or create the companion first",
            )
        return found

    async def get(self, user_id: uuid.UUID, companion_id: uuid.UUID) -> Companion | None:
        """One companion of this user by id; None if it does not exist or is someone else's."""
        return next((c for c in await self.list(user_id) if c.id == companion_id), None)

    async def create(
        self,
        user_id: uuid.UUID,
        *,
        name: str,
        character: str = "friend",
        persona: str = "",
        language: str = "en",
        voice: str | None = None,
        response_length: str = "short",
        traits: BigFive | None = None,
        is_default: bool = False,
    ) -> Companion:
        """Create a companion. A user's first companion is their default whatever `is_default`
        says; `is_default=True` later moves the default to the new one.

        Raises:
            InvalidInput: a field is invalid, or the user already has a companion of that name.
            InvalidIdentity: the user row does not exist (UserService.ensure creates it).
        """
        values = self._validated(
            name=name, character=character, persona=persona, language=language, voice=voice,
            response_length=response_length,
        )
        traits = traits or BigFive()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                has_default = await conn.fetchval(
                    "select exists(select 1 from companions where user_id = $1 and is_default)",
                    user_id,
                )
                make_default = is_default or not has_default
                if is_default and has_default:
                    await conn.execute(
                        "update companions set is_default = false "
                        "where user_id = $1 and is_default", user_id,
                    )
                row = await conn.fetchrow(
                    f"insert into companions (user_id, name, character, persona, language, "
                    f"voice, response_length, openness, conscientiousness, extraversion, "
                    f"agreeableness, neuroticism, is_default) "
                    f"values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
                    f"returning {_COLUMNS}",
                    user_id, values["name"], values["character"], values["persona"],
                    values["language"], values["voice"], values["response_length"],
                    traits.openness, traits.conscientiousness, traits.extraversion,
                    traits.agreeableness, traits.neuroticism, make_default,
                )
        except asyncpg.UniqueViolationError:
            raise InvalidInput(
                "this user already has a companion with that name",
                suggestion="choose another name, or talk to the existing companion",
            ) from None
        except asyncpg.ForeignKeyViolationError:
            raise _unknown_user() from None
        finally:
            await self._cache.delete(self._key(user_id))
        assert row is not None
        logger.info("companion created (default=%s)", make_default)
        return Companion.from_row(row)

    async def list(self, user_id: uuid.UUID) -> list[Companion]:
        """The user's companions, default first, then by creation."""
        key = self._key(user_id)
        cached = await self._cache.get_json(key)
        if isinstance(cached, list):
            return [Companion.from_json(item) for item in cached]
        rows = await self._pool.fetch(
            f"select {_COLUMNS} from companions where user_id = $1 "
            "order by is_default desc, created_at, name",
            user_id,
        )
        companions = [Companion.from_row(r) for r in rows]
        if companions:
            await self._cache.set_json(
                key, [c.to_json() for c in companions], ttl_s=COMPANIONS_TTL_S
            )
        return companions

    def find(self, requested: str, companions: Sequence[Companion]) -> Companion | None:
        """The companion a client's request names: by id, else by name (case-insensitive)."""
        text = requested.strip()
        try:
            wanted_id = uuid.UUID(text)
        except ValueError:
            wanted = _fold(text)
            return next((c for c in companions if _fold(c.name) == wanted), None)
        return next((c for c in companions if c.id == wanted_id), None)

    def addressed_by_name(self, text: str, companions: Sequence[Companion]) -> Companion | None:
        """The companion an utterance opens by calling, if any.

        "Veda, how are you?", "Hey Veda, ..." and a bare "Veda?" address Veda. A name followed
        by more words without punctuation ("Veda is nice") does not, unless a call word such
        as "hey" comes first. The longest matching name wins ("Mira Lee" over "Mira").
        """
        folded = _fold(text).lstrip()
        best: Companion | None = None
        best_len = 0
        for companion in companions:
            name = re.escape(_fold(companion.name))
            called = re.match(rf"{_CALL_WORDS}[\s,]+{name}(?=$|[^\w'])", folded)
            bare = re.match(rf"{name}\s*(?=$|[,.!?:;\u2014-])", folded)
            if (called or bare) and len(companion.name) > best_len:
                best, best_len = companion, len(companion.name)
        return best

    # --- internals ---------------------------------------------------------------------------

    async def _ensure_default(self, user_id: uuid.UUID) -> Companion:
        """Create the default companion from settings, tolerating a concurrent creator."""
        name = clean_name(self._settings.default_companion_name)
        try:
            # Either unique index (name or one-default) may fire when another worker raced us.
            await self._pool.execute(
                "insert into companions (user_id, name, is_default) values ($1, $2, true) "
                "on conflict do nothing",
                user_id, name,
            )
        except asyncpg.ForeignKeyViolationError:
            raise _unknown_user() from None
        await self._cache.delete(self._key(user_id))
        companions = await self.list(user_id)
        default = next((c for c in companions if c.is_default), None)
        if default is None:
            # A non-default companion already holds the name; it becomes the default.
            await self._pool.execute(
                "update companions set is_default = true where user_id = $1 "
                "and lower(name) = lower($2) and not exists "
                "(select 1 from companions where user_id = $1 and is_default)",
                user_id, name,
            )
            await self._cache.delete(self._key(user_id))
            companions = await self.list(user_id)
            default = next((c for c in companions if c.is_default), companions[0])
        logger.info("default companion ready for a user")
        return default

    @staticmethod
    def _validated(
        *, name: str, character: str, persona: str, language: str, voice: str | None,
        response_length: str,
    ) -> dict[str, Any]:
        character_clean = clean_text(
            character, field="character", max_chars=MAX_CHARACTER_CHARS
        ).lower()
        if not character_clean:
            raise InvalidInput(
                "a companion needs a character",
                suggestion="use friend, partner, parent, sibling, child or mentor",
            )
        language_clean = clean_text(language, field="language", max_chars=35)
        if not _LANGUAGE_RE.match(language_clean):
            raise InvalidInput(
                f"language {language_clean!r} is not a language code",
                suggestion="use a code such as en, ur or pt-BR",
            )
        if response_length not in RESPONSE_LENGTHS:
            raise InvalidInput(
                f"response_length {response_length!r} is not known",
                suggestion="use short, medium or long",
            )
        voice_clean = None
        if voice is not None:
            voice_clean = clean_text(voice, field="voice", max_chars=MAX_VOICE_CHARS) or None
        return {
            "name": clean_name(name),
            "character": character_clean,
            "persona": clean_text(persona, field="persona", max_chars=MAX_PERSONA_CHARS),
            "language": language_clean,
            "voice": voice_clean,
            "response_length": response_length,
        }

    @staticmethod
    def _key(user_id: uuid.UUID) -> str:
        return f"companions:{user_id}"
