"""What a session holds of text derived from a memory the person just had forgotten.

The stored summaries and follow-ups lose it in the forget itself (`derived_text`); the session
read them when it began, and uses them on every turn: the profile summary in the memory note,
the follow-ups as topics to bring up. They go from the session at once too, and the summary
the session leaves when it ends is written without what was forgotten.
"""

from __future__ import annotations

from dataclasses import replace

from livekit_layer.companion_session import CompanionSession
from services.memory.forgetting import Forgotten


def after_forget(companion: CompanionSession, done: Forgotten) -> None:
    """Drop the session's copies that could mention what `done` forgot.

    The profile summary goes whole (the stored one was cleared, or is cleared when a
    deferred forget is replayed); the follow-ups the forget removed go, and so does the
    earlier summary the session holds, when summaries lost sentences. The session's own
    summary, written when it ends, leaves out the forgotten words.
    """
    if done.versions == 0 and not done.deferred:
        return
    companion.conversation.forgotten_words |= done.words
    companion.profile = replace(companion.profile, profile_summary=None)
    removed = set(done.derived.follow_ups_removed)
    greeting = companion.greeting
    companion.greeting = replace(
        greeting,
        follow_ups=tuple(f for f in greeting.follow_ups if f.id not in removed),
        last_summary=None if done.derived.summaries_scrubbed else greeting.last_summary,
    )
    if done.derived.summaries_scrubbed:
        companion.conversation.previous_summary = None
