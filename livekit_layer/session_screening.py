"""One session's prompt-injection screening: cached verdicts, refused messages, incidents.

A flagged user message is refused, filed as an incident once, and from then on is neither
logged nor sent to the LLM. `CompanionSession` owns one `SessionScreening` and decides what a
refusal means for the rest of the turn.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from livekit.agents import llm

from livekit_layer.chat_context import turn_key
from services.safety.security_service import InjectionVerdict, SecurityService

MAX_CACHED_VERDICTS = 64


@dataclass
class SessionScreening:
    """The screening state of one person's session with one companion.

    Attributes:
        security: the shared service that inspects text and files incidents.
        user_id: the session's user; every incident is filed under it.
        companion_id: the session's companion.
        incidents: incidents filed by this session.
    """

    security: SecurityService
    user_id: uuid.UUID
    companion_id: uuid.UUID
    incidents: int = 0
    _verdicts: OrderedDict[str, InjectionVerdict] = field(
        default_factory=OrderedDict, init=False
    )
    # Ids of refused user messages: never logged, never sent to the LLM.
    _refused: set[str] = field(default_factory=set, init=False)
    _last_incident: str | None = field(default=None, init=False)

    @property
    def refused_count(self) -> int:
        """How many user messages this session refused."""
        return len(self._refused)

    def inspect(self, text: str) -> InjectionVerdict:
        """The injection verdict for a user's text; cached per text for this session, since a
        spoken turn is looked at on its transcript, its end and its reply."""
        key = turn_key(text)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self.security.inspect(
                text, user_id=self.user_id, companion_id=self.companion_id
            )
            self._verdicts[key] = verdict
            while len(self._verdicts) > MAX_CACHED_VERDICTS:
                self._verdicts.popitem(last=False)
        return verdict

    def refuse(self, message_id: str) -> bool:
        """Mark a flagged message refused; False when it already was."""
        if message_id in self._refused:
            return False
        self._refused.add(message_id)
        return True

    def file_incident(self, verdict: InjectionVerdict, text: str) -> None:
        """File an incident for a refused message, unless it repeats the last one."""
        key = turn_key(text)
        # One attempt may be seen twice under two message ids: generated ahead of its end
        # (preemptive generation), then at its end. Until the conversation moves on, the same
        # text is the same incident.
        if key != self._last_incident:
            self._last_incident = key
            self.incidents += 1
            self.security.record_incident(self.user_id, self.companion_id, verdict, text)

    def moved_on(self) -> None:
        """The conversation went on: the same text again is a new incident."""
        self._last_incident = None

    def without_refused(self, chat_ctx: llm.ChatContext) -> llm.ChatContext:
        """`chat_ctx` without the user messages this session refused."""
        if not self._refused or not any(i.id in self._refused for i in chat_ctx.items):
            return chat_ctx
        return llm.ChatContext([i for i in chat_ctx.items if i.id not in self._refused])

