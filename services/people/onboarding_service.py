"""First sessions: a new person is set up from the app's onboarding data when it sends some,
otherwise the companion learns their name, how to address them and their interests by asking.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.errors import InvalidInput
from core.prompts import render
from core.validators import clean_text
from services.people.user_service import (
    MAX_NAME_CHARS,
    UserProfile,
    UserService,
    clean_interests,
)

if TYPE_CHECKING:
    from services.people.companion_service import Companion, CompanionService

logger = logging.getLogger(__name__)

MAX_METADATA_CHARS = 16_000
_NAME_KEYS = ("name", "display_name", "full_name")
_ADDRESS_KEYS = ("preferred_name", "address_as", "call_me", "nickname")
# Participant attribute / metadata keys that name the companion a client wants (by name or
# id); "companion" may also be an object with the name, persona and character of a new one.
COMPANION_REQUEST_KEYS = ("companion", "companion_name", "companion_id")


@dataclass(frozen=True)
class OnboardingData:
    """What the app collected before the first call (participant metadata or attributes).

    Attributes:
        companion: the companion to talk to, by name or id ("Veda").
        companion_persona: the persona text chosen for a new companion, if any.
    """

    name: str | None = None
    preferred_name: str | None = None
    interests: tuple[str, ...] = ()
    timezone: str | None = None
    companion: str | None = None
    companion_persona: str | None = None
    companion_character: str | None = None

    @property
    def has_profile(self) -> bool:
        return bool(self.name or self.preferred_name or self.interests)

    @classmethod
    def from_participant(cls, metadata: object, attributes: object) -> OnboardingData | None:
        """Read onboarding data from a participant's metadata (a JSON object) and attributes.

        Console's participant carries mocks here, and apps may send anything, so only a str
        (metadata) and a dict of str (attributes) are read; broken values are ignored.
        """
        merged: dict[str, Any] = {}
        if isinstance(attributes, Mapping):
            merged.update({k: v for k, v in attributes.items() if isinstance(k, str)})
        if isinstance(metadata, str) and metadata.strip() and len(metadata) <= MAX_METADATA_CHARS:
            try:
                parsed = json.loads(metadata)
            except json.JSONDecodeError:
                logger.warning("participant metadata is not JSON; ignored")
                parsed = None
            if isinstance(parsed, dict):
                nested = parsed.get("onboarding")
                merged.update(parsed)
                if isinstance(nested, dict):
                    merged.update(nested)
        if not merged:
            return None
        try:
            data = cls._from_mapping(merged)
        except InvalidInput:
            logger.warning("participant onboarding data is invalid; ignored")
            return None
        return data if (data.has_profile or data.companion or data.timezone) else None

    @classmethod
    def _from_mapping(cls, raw: Mapping[str, Any]) -> OnboardingData:
        def text(keys: tuple[str, ...], limit: int = MAX_NAME_CHARS) -> str | None:
            for key in keys:
                value = raw.get(key)
                if isinstance(value, str) and value.strip():
                    return clean_text(value, field=key, max_chars=limit, truncate=True) or None
            return None

        companion = raw.get(COMPANION_REQUEST_KEYS[0])
        persona = character = None
        if isinstance(companion, Mapping):
            persona = companion.get("persona")
            character = companion.get("character")
            companion = companion.get("name") or companion.get("id")
        if not isinstance(companion, str) or not companion.strip():
            companion = text(COMPANION_REQUEST_KEYS[1:])
        persona = persona if isinstance(persona, str) else raw.get("companion_persona")
        character = character if isinstance(character, str) else raw.get("companion_character")
        interests = raw.get("interests")
        return cls(
            name=text(_NAME_KEYS),
            preferred_name=text(_ADDRESS_KEYS),
            interests=tuple(clean_interests(interests)) if interests else (),
            timezone=text(("timezone", "time_zone"), 64),
            companion=clean_text(companion, field="companion", max_chars=MAX_NAME_CHARS,
                                 truncate=True) if isinstance(companion, str) else None,
            companion_persona=clean_text(persona, field="persona", max_chars=2_000,
                                         truncate=True) if isinstance(persona, str) else None,
            companion_character=clean_text(character, field="character", max_chars=40,
                                           truncate=True) if isinstance(character, str) else None,
        )


class OnboardingService:
    """Sets up new people and tells the companion what it still has to learn about them.

    Args:
        users: profile storage.
        companions: resolves (and for onboarding data with a persona, creates) the companion.
    """

    def __init__(self, *, users: UserService, companions: CompanionService) -> None:
        self._users = users
        self._companions = companions

    async def apply(
        self, user_id: uuid.UUID, profile: UserProfile, data: OnboardingData | None
    ) -> UserProfile:
        """Store onboarding data for someone not onboarded yet; otherwise change nothing.

        Once onboarding is done, what they said in conversation wins over what the app sends
        on every join.
        """
        if profile.onboarding_state == "done":
            return profile
        fields: dict[str, object] = {}
        if data is not None:
            if data.name:
                fields["display_name"] = data.name
            if data.preferred_name:
                fields["preferred_name"] = data.preferred_name
            if data.interests:
                fields["interests"] = list(data.interests)
            if data.timezone:
                fields["timezone"] = data.timezone
        if fields:
            try:
                profile = await self._users.update_profile(user_id, **fields)
            except InvalidInput:
                # e.g. an unknown time zone: keep the rest of what the app sent.
                fields.pop("timezone", None)
                profile = await self._users.update_profile(user_id, **fields)
        state = "done" if self.is_complete(profile) else "in_progress"
        if state != profile.onboarding_state:
            profile = await self._users.update_profile(user_id, onboarding_state=state)
            logger.info("onboarding %s", state, extra={"user_id": str(user_id)})
        return profile

    async def companion_for(self, user_id: uuid.UUID, data: OnboardingData | None) -> Companion:
        """The companion this session is with: the one asked for, else the user's default.

        A name the user has no companion for is created when the app sent a persona for it.
        """
        requested = data.companion if data is not None else None
        if requested is None:
            return await self._companions.resolve(user_id)
        try:
            return await self._companions.resolve(user_id, requested=requested)
        except InvalidInput:
            if data is None or not (data.companion_persona or data.companion_character):
                raise
        existing = await self._companions.list(user_id)
        return await self._companions.create(
            user_id,
            name=requested,
            character=data.companion_character or "friend",
            persona=data.companion_persona or "",
            is_default=not existing,
        )

    @staticmethod
    def is_complete(profile: UserProfile) -> bool:
        """Onboarding is done once their name and one more thing about them are known."""
        return bool(profile.display_name and (profile.preferred_name or profile.interests))

    @staticmethod
    def instructions(profile: UserProfile) -> str:
        """The onboarding part of the instructions; empty once onboarding is done."""
        if profile.onboarding_state == "done":
            return ""
        missing = []
        if not profile.display_name:
            missing.append("their name")
        if not profile.preferred_name:
            missing.append("how they like to be addressed")
        if not profile.interests:
            missing.append("a few of their interests")
        if not missing:
            return ""
        return render("onboarding", missing=", ".join(missing))

    async def after_profile_update(self, profile: UserProfile) -> UserProfile:
        """Mark onboarding done once the conversation has filled in enough."""
        if profile.onboarding_state != "done" and self.is_complete(profile):
            logger.info("onboarding done", extra={"user_id": str(profile.id)})
            return await self._users.update_profile(profile.id, onboarding_state="done")
        return profile
