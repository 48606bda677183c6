"""Who the person is: identity at the edge, the `users` row, profile fields and last-seen.

The person's identity (name, preferred name, interests, time zone) is theirs and shared by all
their companions. The LLM-written profile summary is not: each companion writes its own from its
own memories (`companions.profile_summary`), and a session's profile carries only its
companion's summary (`profile_for`), so one companion's facts never reach another.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.config import Settings
from core.errors import InvalidIdentity, InvalidInput
from core.validators import clean_text, parse_user_id
from infrastructure.cache import Cache
from infrastructure.connection_pool import ConnectionPool

logger = logging.getLogger(__name__)

MAX_NAME_CHARS = 80
MAX_INTERESTS = 20
MAX_INTEREST_CHARS = 60
MAX_PROFILE_SUMMARY_CHARS = 800
ONBOARDING_STATES = ("new", "in_progress", "done")
# The profile fields a caller may change; anything else is refused before SQL is built.
# The summary is not one of them: it is per companion (set_companion_summary).
PROFILE_FIELDS = (
    "display_name", "preferred_name", "timezone", "interests", "onboarding_state",
)

_COLUMNS = (
    "id, display_name, preferred_name, timezone, interests, onboarding_state, created_at, "
    "last_seen_at"
)


# Dev mode only. LiveKit's Agents Playground and starter apps join with identities such as
# "voice_assistant_user_1234"; each one stands for the user uuid5(namespace, identity), the
# same on every run and machine. The namespace is this project's own random value.
DEV_IDENTITY_NAMESPACE = uuid.UUID("e400ee6d-4583-4024-9dff-e646e4085572")


def dev_user_id_for(identity: str) -> uuid.UUID:
    """The user a participant identity that is not a UUID stands for in dev mode.

    Raises:
        InvalidIdentity: the identity is empty.
    """
    if not identity.strip():
        raise InvalidIdentity(
            "missing participant identity",
            suggestion="join with a participant identity (any name in dev mode, a UUID otherwise)",
        )
    # A uuid5 carries its version and variant bits, so it is never a placeholder; checked anyway.
    return parse_user_id(uuid.uuid5(DEV_IDENTITY_NAMESPACE, identity), what="dev user id")


def _is_uuid_text(raw: str) -> bool:
    try:
        uuid.UUID(raw.strip())
    except ValueError:
        return False
    return True


def resolve_identity(
    raw_identity: object, *, console: bool, dev_mode: bool, dev_user_id: uuid.UUID
) -> uuid.UUID:
    """The user a session is for: the participant identity, or the dev user in console mode.

    Console's simulated participant is called "mock_user". Otherwise the identity must be the
    UUID the app's token server issued, and anything else is refused (InvalidIdentity), except
    in dev mode (`python agent.py dev`), where an identity that is not a UUID at all (the
    Playground's "voice_assistant_user_1234") stands for `dev_user_id_for(identity)`, with a
    warning. A UUID, or a malformed or placeholder one, is checked strictly in every mode.
    """
    if console:
        return dev_user_id
    if dev_mode and isinstance(raw_identity, str) and not _is_uuid_text(raw_identity):
        user_id = dev_user_id_for(raw_identity)
        logger.warning(
            "dev mode: the participant identity is not a UUID; it stands for user %s "
            "(`python agent.py start` refuses such an identity)",
            user_id,
            extra={"pii.identity": raw_identity},
        )
        return user_id
    return parse_user_id(raw_identity, what="participant identity")


@dataclass(frozen=True)
class UserProfile:
    """One person as one companion knows them: the `users` row, plus that companion's summary.

    Attributes:
        profile_summary: the summary the session's companion wrote (`UserService.profile_for`);
            None on a profile read without a companion (`get`, `ensure`, `update_profile`).
    """

    id: uuid.UUID
    display_name: str | None
    preferred_name: str | None
    timezone: str | None
    interests: tuple[str, ...]
    profile_summary: str | None
    onboarding_state: str
    created_at: datetime
    last_seen_at: datetime | None

    @property
    def address_as(self) -> str | None:
        """How to address them: the name they asked for, else their name."""
        return self.preferred_name or self.display_name

    @classmethod
    def from_row(cls, row: Any) -> UserProfile:
        return cls(
            id=row["id"],
            display_name=row["display_name"],
            preferred_name=row["preferred_name"],
            timezone=row["timezone"],
            interests=tuple(row["interests"] or ()),
            profile_summary=None,
            onboarding_state=row["onboarding_state"],
            created_at=row["created_at"],
            last_seen_at=row["last_seen_at"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "display_name": self.display_name,
            "preferred_name": self.preferred_name,
            "timezone": self.timezone,
            "interests": list(self.interests),
            "profile_summary": self.profile_summary,
            "onboarding_state": self.onboarding_state,
            "created_at": self.created_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat() if self.last_seen_at else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserProfile:
        last_seen = data.get("last_seen_at")
        return cls(
            id=uuid.UUID(data["id"]),
            display_name=data.get("display_name"),
            preferred_name=data.get("preferred_name"),
            timezone=data.get("timezone"),
            interests=tuple(data.get("interests") or ()),
            # Never from the per-user cache: an entry written before the summary moved to the
            # companions may still hold another companion's summary.
            profile_summary=None,
            onboarding_state=data.get("onboarding_state", "new"),
            created_at=datetime.fromisoformat(data["created_at"]),
            last_seen_at=datetime.fromisoformat(last_seen) if last_seen else None,
        )


def _clean_optional(value: object, field: str, max_chars: int) -> str | None:
    if value is None:
        return None
    text = clean_text(value, field=field, max_chars=max_chars)
    return text or None


def clean_interests(value: object) -> list[str]:
    """A list (or comma-separated text) of short interests, de-duplicated, order kept."""
    if value is None:
        return []
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise InvalidInput("interests must be a list of short texts", suggestion='send ["chess"]')
    out: list[str] = []
    for item in items:
        text = clean_text(item, field="interest", max_chars=MAX_INTEREST_CHARS, truncate=True)
        if text and text.lower() not in {o.lower() for o in out}:
            out.append(text)
    if len(out) > MAX_INTERESTS:
        raise InvalidInput(
            f"{len(out)} interests given; the limit is {MAX_INTERESTS}",
            suggestion=f"keep the {MAX_INTERESTS} that matter most",
        )
    return out


def clean_summary(value: object) -> str | None:
    """A profile summary as stored: cleaned, cut to MAX_PROFILE_SUMMARY_CHARS, None if empty."""
    if value is None:
        return None
    return clean_text(
        value, field="profile summary", max_chars=MAX_PROFILE_SUMMARY_CHARS, truncate=True
    ) or None


def _clean_field(name: str, value: object) -> object:
    if name in ("display_name", "preferred_name"):
        return _clean_optional(value, name.replace("_", " "), MAX_NAME_CHARS)
    if name == "profile_summary":
        raise InvalidInput(
            "the profile summary belongs to one companion, not to the user",
            suggestion="use UserService.set_companion_summary(user_id, companion_id, text)",
        )
    if name == "interests":
        return clean_interests(value)
    if name == "timezone":
        zone = _clean_optional(value, "timezone", 64)
        if zone is not None:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise InvalidInput(
                    f"timezone {zone!r} is not a known IANA time zone",
                    suggestion="use a name such as Europe/Berlin or America/New_York",
                ) from None
        return zone
    if name == "onboarding_state":
        if value not in ONBOARDING_STATES:
            raise InvalidInput(
                f"onboarding state {value!r} is unknown",
                suggestion="use one of " + ", ".join(ONBOARDING_STATES),
            )
        return value
    raise InvalidInput(
        f"{name!r} is not a profile field",
        suggestion="change one of " + ", ".join(PROFILE_FIELDS),
    )


class UserService:
    """Reads and writes `users` rows; profiles are cached and invalidated on every write.

    Args:
        pool: the shared database pool.
        cache: the shared cache (Redis or in-process).
        settings: for the cache TTL.
    """

    def __init__(self, *, pool: ConnectionPool, cache: Cache, settings: Settings) -> None:
        self._pool = pool
        self._cache = cache
        self._ttl_s = settings.cache_default_ttl_s

    @staticmethod
    def cache_key(user_id: uuid.UUID) -> str:
        return f"user:{user_id}"

    @staticmethod
    def summary_key(user_id: uuid.UUID, companion_id: uuid.UUID) -> str:
        return f"profile_summary:{user_id}:{companion_id}"

    async def ensure(self, user_id: uuid.UUID) -> tuple[UserProfile, bool]:
        """The user's profile, creating the row on first sight; `created_now` says which."""
        user_id = parse_user_id(user_id)
        cached = await self._cache.get_json(self.cache_key(user_id))
        if cached is not None:
            return UserProfile.from_json(cached), False
        # One round trip: the insert's row when it created one, else the existing row (the
        # select sees the statement's snapshot, which does not contain the new row).
        rows = await self._pool.fetch(
            f"with ins as (insert into public.users (id) values ($1) on conflict (id) do nothing "
            f"returning {_COLUMNS}) "
            f"select {_COLUMNS}, true as created from ins "
            f"union all select {_COLUMNS}, false as created from public.users where id = $1",
            user_id,
        )
        if not rows:
            # Another process inserted it concurrently, after this statement's snapshot.
            row = await self._pool.fetchrow(
                f"select {_COLUMNS}, false as created from public.users where id = $1", user_id
            )
            rows = [row] if row is not None else []
        if not rows:
            raise InvalidIdentity(f"user {user_id} could not be created")
        profile = UserProfile.from_row(rows[0])
        created = bool(rows[0]["created"])
        if created:
            logger.info("new user created", extra={"user_id": str(user_id)})
        await self._cache.set_json(self.cache_key(user_id), profile.to_json(), self._ttl_s)
        return profile, created

    async def get(self, user_id: uuid.UUID) -> UserProfile | None:
        user_id = parse_user_id(user_id)
        cached = await self._cache.get_json(self.cache_key(user_id))
        if cached is not None:
            return UserProfile.from_json(cached)
        row = await self._pool.fetchrow(
            f"select {_COLUMNS} from public.users where id = $1", user_id
        )
        if row is None:
            return None
        profile = UserProfile.from_row(row)
        await self._cache.set_json(self.cache_key(user_id), profile.to_json(), self._ttl_s)
        return profile

    async def update_profile(self, user_id: uuid.UUID, **fields: object) -> UserProfile:
        """Change the given profile fields (None clears a text field); returns the new profile.

        Raises:
            InvalidInput: an unknown field or a value that cannot be stored.
            InvalidIdentity: the user does not exist.
        """
        user_id = parse_user_id(user_id)
        values = {name: _clean_field(name, value) for name, value in fields.items()}
        if not values:
            profile = await self.get(user_id)
            if profile is None:
                raise InvalidIdentity(f"user {user_id} does not exist")
            return profile
        # Column names come from PROFILE_FIELDS only (checked above), values are parameters.
        assignments = [f"{name} = ${i}" for i, name in enumerate(values, start=2)]
        if values.get("onboarding_state") == "done":
            assignments.append("onboarded_at = coalesce(onboarded_at, now())")
        row = await self._pool.fetchrow(
            f"update public.users set {', '.join(assignments)} where id = $1 returning {_COLUMNS}",
            user_id,
            *values.values(),
        )
        await self._cache.delete(self.cache_key(user_id))
        if row is None:
            raise InvalidIdentity(
                f"user {user_id} does not exist",
                suggestion="call ensure() when the session starts",
            )
        return UserProfile.from_row(row)

    async def touch(self, user_id: uuid.UUID) -> None:
        """Record that the user was here now."""
        user_id = parse_user_id(user_id)
        await self._pool.execute(
            "update public.users set last_seen_at = now() where id = $1", user_id
        )
        await self._cache.delete(self.cache_key(user_id))

    # --- the per-companion summary -----------------------------------------------------------

    async def profile_for(
        self, user_id: uuid.UUID, companion_id: uuid.UUID
    ) -> UserProfile | None:
        """The person as this companion knows them: their profile with its own summary."""
        profile = await self.get(user_id)
        if profile is None:
            return None
        return replace(
            profile, profile_summary=await self.companion_summary(user_id, companion_id)
        )

    async def companion_summary(self, user_id: uuid.UUID, companion_id: uuid.UUID) -> str | None:
        """The summary this companion wrote about the person (None: none yet, or not theirs)."""
        user_id = parse_user_id(user_id)
        key = self.summary_key(user_id, companion_id)
        cached = await self._cache.get_json(key)
        if isinstance(cached, dict):
            return cached.get("summary")
        summary: str | None = await self._pool.fetchval(
            "select profile_summary from public.companions where id = $2 and user_id = $1",
            user_id, companion_id,
        )
        # Wrapped, so that "no summary yet" is cached too.
        await self._cache.set_json(key, {"summary": summary}, self._ttl_s)
        return summary

    async def set_companion_summary(
        self, user_id: uuid.UUID, companion_id: uuid.UUID, summary: object
    ) -> str | None:
        """Store the summary one companion keeps of the person; returns it as stored.

        Raises:
            InvalidInput: the summary is not text.
            InvalidIdentity: the companion does not exist or is not this user's.
        """
        user_id = parse_user_id(user_id)
        text = clean_summary(summary)
        row = await self._pool.fetchrow(
            "update public.companions set profile_summary = $3, profile_updated_at = now() "
            "where id = $2 and user_id = $1 returning profile_summary",
            user_id, companion_id, text,
        )
        await self._cache.delete(self.summary_key(user_id, companion_id))
        if row is None:
            raise InvalidIdentity(
                "this companion does not exist for this user",
                suggestion="refresh the summary of one of the user's own companions",
            )
        stored: str | None = row["profile_summary"]
        return stored
