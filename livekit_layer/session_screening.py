"""One session's screening of user turns: the size limit, cached injection verdicts, refused
messages and their incidents.

A turn over the size limit is set aside before anything else looks at it: never screened,
stored or sent to the LLM; the person is asked to split it. A flagged turn is refused, filed
as an incident once, and from then on is neither logged nor sent to the LLM.
`CompanionSession` owns one `SessionScreening` and decides what that means for the turn.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from livekit.agents import llm

from core.errors import InvalidInput
from core.validators import check_utterance
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
    # Keyed by the screen's own canonical form of the text, so two texts share a verdict only
    # when the screen cannot tell them apart (a line break is a difference; a zero-width space
    # or upper case is not).
    _verdicts: OrderedDict[str, InjectionVerdict] = field(
        default_factory=OrderedDict, init=False
    )
    # Ids of user messages never logged nor sent to the LLM: refused ones and too long ones.
    _refused: set[str] = field(default_factory=set, init=False)
    _too_long: set[str] = field(default_factory=set, init=False)
    _last_incident: str | None = field(default=None, init=False)

    @property
    def refused_count(self) -> int:
        """How many user messages this session refused."""
        return len(self._refused)

    @property
    def too_long_count(self) -> int:
        """How many user messages this session set aside for being over the size limit."""
        return len(self._too_long)

    def too_long(self, message_id: str, text: str) -> InvalidInput | None:
        """Why `text` is over the turn size limit (and the message is set aside), or None.

        Checked first, in constant time for an oversized text: nothing heavy runs on it.
        """
        try:
            check_utterance(text)
        except InvalidInput as exc:
            self._too_long.add(message_id)
            return exc
        return None

    def inspect(self, text: str) -> InjectionVerdict:
        """The injection verdict for a user's text; cached for this session, since a spoken
        turn is looked at on its transcript, its end and its reply."""
        key = self.security.screening_key(text)
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

    def without_withheld(self, chat_ctx: llm.ChatContext) -> llm.ChatContext:
        """`chat_ctx` without the user messages this session refused or set aside."""
        withheld = self._refused | self._too_long
        if not withheld or not any(i.id in withheld for i in chat_ctx.items):
            return chat_ctx
        return llm.ChatContext([i for i in chat_ctx.items if i.id not in withheld])

