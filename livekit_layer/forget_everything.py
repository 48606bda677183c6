"""The person's "forget everything about me": asked out loud, confirmed out loud, then final.

The `forget_everything` tool is called twice. The first call erases nothing: it tells the
model what would be erased and what stays, and issues a confirmation code that only this
session can use, for its person, within CODE_TTL_S, once, and only in a later turn of the
person than the one it was issued in (their answer). The model reads the list to the person and
asks them to confirm; only a second call with confirm=true and that code erases
(`PersonData.erase`: everything about them, in one transaction). Then the session goes on as
a first meeting: its profile, follow-ups, mood and what it holds of the conversation so far are
dropped, and every later LLM call leaves out what was said before the erasure.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from livekit_layer.companion_session import CompanionSession
from livekit_layer.erasure_confirmation import CODE_TTL_S, TOOL_NAME
from services.people.person_data import LiveSession

STAYS = (
    "the account itself (so this conversation can go on) and the companions (their names, "
    "characters and voices); safety records of refused messages stay, without the words"
)


async def forget_everything(
    companion: CompanionSession, *, confirm: bool, code: str
) -> dict[str, Any]:
    """One call of the tool (module docstring): what would be erased and a code, or, with
    confirm and a valid code in a later turn, the erasure itself.

    Raises:
        InvalidInput: confirm without a valid code, or before the person answered.
        StorageUnavailable: the database did not answer; nothing was erased (try again).
    """
    services, user_id = companion.services, companion.guard.user_id
    turn = sum(1 for t in companion.conversation.turns if t.role == "user")
    if not confirm:
        stored = await services.person_data.inventory(user_id)
        issued = companion.erasure.issue(user_id, turn)
        return {
            "erased": False,
            "would_erase": {
                **stored.to_json(), "profile": "name, preferred name, interests, time zone",
                "relationship": "the companions' mood, needs and habits with the person",
            },
            "stays": STAYS,
            "code": issued,
            "expires_in_s": int(CODE_TTL_S),
            "next": "tell the person plainly what will be erased and that it cannot be undone, "
            f"and ask them to confirm out loud; only if they say yes, call {TOOL_NAME} with "
            f"confirm=true and code {issued}",
        }
    companion.erasure.check(user_id, turn, code)
    conversation = companion.conversation
    erased = await services.person_data.erase(user_id, live=LiveSession(
        conversation.id, conversation.companion_id, conversation.room,
    ))
    companion.erasure.used()
    companion.erased()
    await go_on_afresh(companion)
    return {
        "erased": True,
        "rows": sum(erased.values()),
        "next": "tell the person everything about them is forgotten; you know nothing about "
        "them now, as on a first meeting",
    }


async def go_on_afresh(companion: CompanionSession) -> None:
    """The session goes on as a first meeting: its profile, follow-ups, mood and the
    conversation so far are dropped (the stored ones were erased)."""
    services, user_id = companion.services, companion.guard.user_id
    profile = await services.users.profile_for(user_id, companion.companion.id)
    if profile is not None:
        companion.profile = profile
    companion.greeting = replace(companion.greeting, follow_ups=(), last_summary=None)
    conversation = companion.conversation
    conversation.turns.clear()
    conversation.history.clear()
    conversation.previous_summary = None
    companion.personality = await services.personality.snapshot(user_id, companion.companion)
