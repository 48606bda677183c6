"""The composition root: builds the shared infrastructure and every service once per job, and
opens one person's session with one companion on top of them.

Nothing else constructs services. `Services.aclose()` finishes background work, drains the
batcher and closes in the reverse order of construction.

A session screens each user message for prompt injection before it is answered, logged or
remembered: a flagged one is refused, filed as an incident and kept from the LLM for good.

A turn that opens by calling another of the person's companions by name ("Luna, ...") belongs
to that companion: it is kept out of this session, which hands over to a new session of the
called companion (`open_successor`, `hand_over`) and closes in the background.

This module is the public face; the parts live in:
    services/container.py          `Services` and `build_services`
    services/session_open.py       `open_session`
    services/companion_session.py  `CompanionSession` and `SessionUser`
    services/session_screening.py  the session's injection screening state
    services/session_prompts.py    instructions, the switch answer, resumed history
    services/chat_context.py       reading and extending the LLM chat context
"""

from __future__ import annotations

from services.chat_context import MEMORY_ITEM_PREFIX
from services.companion_session import (
    APOLOGY_PROMPT,
    MAX_HEARD_CHARS,
    MAX_PENDING_COMMITS,
    MAX_PREFETCHES,
    MAX_UNLOGGED,
    RECENT_TURNS,
    CompanionSession,
    SessionUser,
)
from services.container import Services, build_services
from services.session_open import open_session
from services.session_prompts import CHARACTER_PHRASES, SWITCH_PROMPT
from services.session_screening import MAX_CACHED_VERDICTS

__all__ = [
    "APOLOGY_PROMPT",
    "CHARACTER_PHRASES",
    "MAX_CACHED_VERDICTS",
    "MAX_HEARD_CHARS",
    "MAX_PENDING_COMMITS",
    "MAX_PREFETCHES",
    "MAX_UNLOGGED",
    "MEMORY_ITEM_PREFIX",
    "RECENT_TURNS",
    "SWITCH_PROMPT",
    "CompanionSession",
    "Services",
    "SessionUser",
    "build_services",
    "open_session",
]
