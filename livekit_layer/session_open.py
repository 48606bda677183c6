"""Opening one person's session with one companion: everything it needs before the greeting,
in as few round trips as possible."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import replace

from core.errors import InvalidIdentity
from livekit_layer.companion_session import CompanionSession
from services.composition import Services
from services.people.companion_service import Companion
from services.people.onboarding_service import OnboardingData

logger = logging.getLogger(__name__)


async def open_session(
    services: Services,
    *,
    user_id: uuid.UUID,
    room: str | None = None,
    onboarding: OnboardingData | None = None,
    companion: Companion | None = None,
) -> CompanionSession:
    """Everything a session needs before the greeting, in as few round trips as possible.

    Args:
        companion: the companion to talk with; None picks it from `onboarding` (the
            participant's request) or the user's default.

    Raises:
        InvalidIdentity: `user_id` is not a UUID (nothing is written then), or `companion` is
            not this user's.
    """
    started = time.perf_counter()
    if not isinstance(user_id, uuid.UUID):
        raise InvalidIdentity("a session needs the user's UUID", suggestion="parse it first")
    if companion is not None and companion.user_id != user_id:
        raise InvalidIdentity(
            "the companion belongs to another user", suggestion="open one of this user's own"
        )
    profile, created = await services.users.ensure(user_id)
    # The user's in-process memory index loads in the background while the greeting is
    # prepared and spoken, so the first turn already searches it.
    services.rag.warm(user_id)
    if companion is None:
        profile, chosen = await asyncio.gather(
            services.onboarding.apply(user_id, profile, onboarding),
            _companion_for(services, user_id, onboarding),
        )
    else:
        chosen = companion
        profile = await services.onboarding.apply(user_id, profile, onboarding)
    greeting, snapshot, summary, companions = await asyncio.gather(
        services.conversations.greeting_context(user_id, chosen.id),
        services.personality.snapshot(user_id, chosen),
        services.users.companion_summary(user_id, chosen.id),
        services.companions.list(user_id),
    )
    # What this companion wrote about them; another companion's summary never comes here.
    profile = replace(profile, profile_summary=summary)
    # Last-seen is bookkeeping: it runs alongside the session insert, not after it.
    conversation, _ = await asyncio.gather(
        services.conversations.start(user_id, chosen.id, room=room, context=greeting),
        services.users.touch(user_id),
    )
    # What earlier sessions with this companion left undone (a job that crashed or ran out of
    # time at its end) is finished in the background.
    services.spawn(
        services.after_session.catch_up(user_id, chosen.id), what="catching up on sessions"
    )
    if greeting.follow_ups and not conversation.resumed:
        # The greeting brings these up (a resumed session's already did).
        services.follow_ups.mark_raised(user_id, [f.id for f in greeting.follow_ups])
    session = CompanionSession(
        services=services, profile=profile, companion=chosen, conversation=conversation,
        greeting=greeting, personality=snapshot, created_now=created,
        bootstrap_ms=(time.perf_counter() - started) * 1000, companions=tuple(companions),
    )
    logger.info(
        "session open (new_user=%s, resumed=%s, onboarding=%s, ms=%.1f)",
        created, conversation.resumed, profile.onboarding_state, session.bootstrap_ms,
    )
    return session


async def _companion_for(
    services: Services, user_id: uuid.UUID, data: OnboardingData | None
) -> Companion:
    try:
        return await services.onboarding.companion_for(user_id, data)
    except InvalidIdentity:
        # The app asked for a companion this user does not have: talk with the default one.
        logger.warning("requested companion not found; using the default companion")
        return await services.companions.resolve(user_id)


async def open_successor(
    current: CompanionSession, companion: Companion, text: str, *, modality: str
) -> CompanionSession:
    """A session with `companion`, for the turn `text` that called it by name in `current`:
    its own conversation (the turn is logged there), memories, mood and greeting context."""
    successor = await open_session(
        current.services, user_id=current.guard.user_id, room=current.conversation.room,
        companion=companion,
    )
    successor.opening_turn, successor.opening_modality = text, modality
    successor.log_message("user", text, modality=modality)
    return successor
