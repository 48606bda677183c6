"""One person talking with one companion: identity, per-turn memory context (prefetched on
heard transcripts, `turn_memory`), logging, injection screening and the hand-over to a
companion called by name ("Luna, ..."): that turn is kept out of this session, which hands
over to a new session of the called companion (`session_open.open_successor`, `hand_over`)
and closes in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from livekit.agents import AgentSession, llm
from livekit.agents.voice.events import ConversationItemAddedEvent, ErrorEvent, EventTypes

from core.deadline import Deadline, within
from core.latency import LatencyWindow
from core.prompts import prompt, render
from core.validators import MAX_UTTERANCE_CHARS, WriteGuard
from livekit_layer.chat_context import pending_user_message
from livekit_layer.erasure_confirmation import ErasureConfirmation, before_erasure
from livekit_layer.session_prompts import companion_instructions, history_chat_ctx
from livekit_layer.session_screening import SessionScreening
from livekit_layer.turn_memory import RECENT_TURNS, TurnMemory
from services.composition import Services
from services.memory.profile_service import profile_line
from services.people.companion_service import Companion
from services.people.conversation_service import ConversationSession
from services.people.greeting import GreetingContext, greeting_instructions
from services.people.user_service import UserProfile
from services.persona.personality_state import PersonalitySnapshot
from services.persona.silence_watcher import SilenceWatcher
from services.safety.security_service import InjectionVerdict

logger = logging.getLogger(__name__)

MAX_UNLOGGED = 8
# Turns addressed to another companion, waiting for the session to commit them.
MAX_PENDING_COMMITS = 8
APOLOGY_PROMPT = "llm_unavailable"
TOO_LONG_PROMPT = "turn_too_long"
# Metrics only a spoken user turn, or the reply to one, carries.
_SPOKEN_METRICS = {"user": "stopped_speaking_at", "assistant": "e2e_latency"}


@dataclass(frozen=True)
class SessionUser:
    """The identity a session was opened for; it is the AgentSession's userdata."""

    user_id: uuid.UUID
    companion_id: uuid.UUID


@dataclass
class CompanionSession:
    """One person talking with one companion: identity, write guard and per-turn work.

    Tools and hooks never take a user id from the model: every write uses `guard`'s ids.
    """

    services: Services
    profile: UserProfile
    companion: Companion
    conversation: ConversationSession
    greeting: GreetingContext
    personality: PersonalitySnapshot
    created_now: bool
    bootstrap_ms: float
    # The person's companions, this one included: a turn may call another by name.
    companions: tuple[Companion, ...] = ()
    # Set when the person called this companion by name in another companion's session: the
    # turn it answers first, instead of greeting.
    opening_turn: str | None = None
    # How the opening turn was said: its answer is logged as a reply to it.
    opening_modality: str | None = None
    guard: WriteGuard = field(init=False)
    user: SessionUser = field(init=False)
    turn_ms: LatencyWindow = field(default_factory=LatencyWindow)
    watcher: SilenceWatcher | None = None
    erasure: ErasureConfirmation = field(default_factory=ErasureConfirmation)
    # When everything about the person was erased in this session (time.time()): what was
    # said before is left out of every later LLM call.
    _erased_at: float | None = None
    _heard: str = ""
    _turn_memory: TurnMemory = field(init=False)
    _screening: SessionScreening = field(init=False)
    # What the companion said in place of a reply (refusals, apologies): not conversation.
    # Bounded: a refusal generated ahead of a turn may never be spoken.
    _unlogged: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_UNLOGGED))
    # Turns addressed to another companion, by message id: resolved with their modality once
    # the session commits them to the conversation.
    _commits: OrderedDict[str, asyncio.Future[str]] = field(default_factory=OrderedDict)
    _listeners: list[tuple[EventTypes, Callable[[Any], None]]] = field(default_factory=list)
    _closed: bool = False

    def __post_init__(self) -> None:
        self.guard = WriteGuard(self.profile.id, self.companion.id)
        self.user = SessionUser(self.profile.id, self.companion.id)
        self._screening = SessionScreening(
            self.services.security, self.profile.id, self.companion.id
        )
        forgotten, user_id = self.services.forgotten, self.profile.id
        self._turn_memory = TurnMemory(
            lookup=self._rag_block, mood=self._mood_line,
            version=lambda: forgotten.version(user_id), turn_ms=self.turn_ms,
            budget_ms=self.services.settings.rag_budget_ms,
        )

    @property
    def user_id(self) -> uuid.UUID:
        return self.profile.id

    @property
    def prefetch_hits(self) -> int:
        """Turns whose memory lookup had started on their transcript."""
        return self._turn_memory.prefetch_hits

    @property
    def incidents(self) -> int:
        """Injection incidents this session filed."""
        return self._screening.incidents

    # --- instructions -------------------------------------------------------------------------

    def instructions(self) -> str:
        """The companion's standing instructions: persona, what it knows, onboarding."""
        return companion_instructions(
            self.companion, self.profile, self.services.onboarding.instructions(self.profile)
        )

    def greeting_instructions(self) -> str:
        """The first reply's instructions: a greeting, or the answer to the turn that called
        this companion by name."""
        text = greeting_instructions(
            self.greeting,
            companion_name=self.companion.name,
            name=self.profile.address_as,
            started_at=self.conversation.started_at,
            resumed=self.conversation.resumed,
            answering_turn=self.opening_turn is not None,
        )
        mood = self.services.personality.describe(
            self.companion, self.personality.mood, self.personality.quirks,
            self.personality.needs,
        )
        return f"{text}\n{mood}"

    def history_chat_ctx(self) -> llm.ChatContext:
        """A resumed session's recent turns, so the model continues the same conversation,
        and the turn that called this companion by name, if one did."""
        return history_chat_ctx(self.conversation.history, self.opening_turn)

    async def update_profile(self, **fields: object) -> UserProfile:
        """Change profile fields of this session's user; completes onboarding when it can."""
        profile = await self.services.users.update_profile(self.guard.user_id, **fields)
        profile = await self.services.onboarding.after_profile_update(profile)
        # The user row has the person's own fields; the summary stays this companion's.
        self.profile = replace(profile, profile_summary=self.profile.profile_summary)
        await self.services.conversations.invalidate(self.guard.user_id, self.guard.companion_id)
        return self.profile

    # --- companions called by name ----------------------------------------------------------------

    def addressed(self, text: str) -> Companion | None:
        """Another of the person's companions, when `text` opens by calling it by name."""
        called = self.services.companions.addressed_by_name(text, self.companions)
        return called if called is not None and called.id != self.companion.id else None

    def addressed_turn(
        self, chat_ctx: llm.ChatContext
    ) -> tuple[llm.ChatMessage, Companion] | None:
        """The unanswered user message of `chat_ctx` and the other companion it calls, if any."""
        pending = pending_user_message(chat_ctx)
        if pending is None:
            return None
        called = self.addressed(pending.text_content or "")
        return (pending, called) if called is not None else None

    def committed(self, message_id: str) -> asyncio.Future[str]:
        """Resolves with the modality once the session commits this addressed turn.

        A spoken turn may be answered ahead of its end (preemptive generation) and then
        dropped; only a committed turn changes companions.
        """
        future = self._commits.get(message_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            if not self._listeners:
                # Not attached to a session: nothing will report the commit.
                future.set_result("text")
            self._commits[message_id] = future
            while len(self._commits) > MAX_PENDING_COMMITS:
                self._commits.popitem(last=False)
        return future

    def _commit(self, message_id: str, modality: str) -> None:
        future = self.committed(message_id)
        if not future.done():
            future.set_result(modality)

    def hand_over(self, session: AgentSession[Any], successor: CompanionSession) -> None:
        """`successor` takes `session` over: it logs the turns and owns the tools' identity;
        this session closes in the background (summary, follow-ups, mood, profile refresh).

        Synchronous, so that no other turn or shutdown can see the session half switched.
        """
        nudges = self.watcher is not None
        self.detach(session)
        successor.attach(session, nudges=nudges)
        session.userdata = successor.user
        self.services.spawn(self.close(wait=False), what="closing the previous companion")
        logger.info("companion switched by name")

    def attach(self, session: AgentSession[Any], *, nudges: bool = True) -> None:
        """Log the session's turns and replies (both modalities), apologize when the LLM
        fails for good, and watch for silences."""

        def on_item(event: ConversationItemAddedEvent) -> None:
            item = event.item
            if not isinstance(item, llm.ChatMessage):
                return
            self._screening.moved_on()
            text = item.text_content
            spoken = _SPOKEN_METRICS.get(item.role, "") in item.metrics
            modality = "voice" if spoken else "text"
            if item.role == "user":
                self._heard = ""  # the turn is committed; the next transcript starts a new one
                if self._screening.too_long(item.id, text or "") or self.screen(item).flagged:
                    return
                if text and self.addressed(text) is not None:
                    # Another companion's turn: logged in its conversation on the hand-over.
                    self._commit(item.id, modality)
                    return
            if not text:
                return
            if item.role == "assistant" and text in self._unlogged:
                self._unlogged.remove(text)
                return
            if item.role == "assistant" and self.opening_modality is not None:
                # The answer to the turn that called this companion (it has no metrics of a
                # reply: the framework generated it on entering, not for a user turn).
                modality, self.opening_modality = self.opening_modality, None
            self.log_message(item.role, text, modality=modality)

        def on_error(event: ErrorEvent) -> None:
            # Recoverable errors are retried by the session; this one ended a reply.
            if isinstance(event.error, llm.LLMError) and not event.error.recoverable:
                self.say_unscripted(session, prompt(APOLOGY_PROMPT), why="llm unavailable")

        listeners: list[tuple[EventTypes, Callable[[Any], None]]] = [
            ("conversation_item_added", on_item),
            ("user_input_transcribed", lambda ev: self.heard(ev.transcript, final=ev.is_final)),
            ("error", on_error),
        ]
        if nudges:
            self.watcher = self.services.proactive.watcher(
                self.guard.user_id,
                self.companion,
                on_nudge=lambda instructions: session.generate_reply(instructions=instructions),
            )
            watcher = self.watcher
            listeners += [
                ("user_state_changed", lambda ev: watcher.user_state(ev.new_state)),
                ("agent_state_changed", lambda ev: watcher.agent_state(ev.new_state)),
            ]
        for event, callback in listeners:
            session.on(event, callback)
        self._listeners = listeners

    def detach(self, session: AgentSession[Any]) -> None:
        """Stop listening to `session`; the silence watcher stops when the session closes."""
        for event, callback in self._listeners:
            session.off(event, callback)
        self._listeners = []

    def say_unscripted(self, session: AgentSession[Any], text: str, *, why: str) -> None:
        """Speak `text` in place of a reply; it is not logged as conversation or memory."""
        self._unlogged.append(text)
        try:
            session.say(text)
        except RuntimeError as exc:
            # The session is closing (e.g. after repeated failures): nobody is left to hear it.
            self._unlogged.remove(text)
            logger.warning("could not speak (%s): %s", why, type(exc).__name__)

    def stats(self) -> dict[str, Any]:
        """This session's own figures: turn timings, prefetches, screening, nudges."""
        return {
            "turn_ms": self.turn_ms.summary(),
            "prefetch_hits": self.prefetch_hits,
            "late_prefetches": self._turn_memory.late_prefetches,
            "refused_messages": self._screening.refused_count,
            "too_long_messages": self._screening.too_long_count,
            "incidents": self.incidents,
            "nudges": self.watcher.stats() if self.watcher is not None else None,
        }

    def tool_running(self) -> contextlib.AbstractContextManager[None]:
        """Wrap a tool's work: no silence nudge fires while it runs."""
        if self.watcher is None:
            return contextlib.nullcontext()
        return self.watcher.tool_running()

    # --- screening ------------------------------------------------------------------------------

    def inspect(self, text: str) -> InjectionVerdict:
        """The injection verdict for a user's text; cached per text for this session, since a
        spoken turn is looked at on its transcript, its end and its reply."""
        return self._screening.inspect(text)

    def screen(self, message: llm.ChatMessage) -> InjectionVerdict:
        """Screen one user message; a flagged one is filed as an incident (once) and from
        then on is neither logged nor sent to the LLM."""
        text = message.text_content or ""
        verdict = self.inspect(text)
        if not verdict.flagged or not self._screening.refuse(message.id):
            return verdict
        # A refused spoken turn is never committed: its transcript must not run on into the
        # next turn's.
        self._heard = ""
        self._screening.file_incident(verdict, text)
        return verdict

    def refusal(self, verdict: InjectionVerdict) -> str:
        """The polite refusal for a flagged message; it is not logged as conversation."""
        return self._unscripted(self.services.security.refusal(verdict))

    def instead_of_reply(self, message: llm.ChatMessage) -> str | None:
        """What to say instead of answering `message`, or None to answer it.

        A turn over the size limit is set aside before anything looks at it (never screened,
        stored, looked up or sent to the LLM) and the person is asked to split it: nothing of
        it is kept cut to fit. An injection is refused and filed once.
        """
        text = message.text_content or ""
        if self._screening.too_long(message.id, text):
            self._heard = ""
            return self._unscripted(render(
                TOO_LONG_PROMPT, length=f"{len(text):,}", limit=f"{MAX_UTTERANCE_CHARS:,}"
            ))
        verdict = self.screen(message)
        return self.refusal(verdict) if verdict.flagged else None

    def screen_context(self, chat_ctx: llm.ChatContext) -> tuple[llm.ChatContext, str | None]:
        """`chat_ctx` without the user messages set aside (refused or too long), and what to
        say instead of calling the LLM when its unanswered user message is one of them.

        A typed message enters the history before the reply is generated, so a set-aside one
        stays there; it is taken out of every later LLM call here.
        """
        pending = pending_user_message(chat_ctx)
        if pending is not None:
            instead = self.instead_of_reply(pending)
            if instead is not None:
                return chat_ctx, instead
        chat_ctx = self._screening.without_withheld(chat_ctx)
        if self._erased_at is not None:
            chat_ctx = before_erasure(chat_ctx, self._erased_at)
        return chat_ctx, None

    def erased(self) -> None:
        """Everything about the person was just erased: from now on, what was said before is
        left out of every LLM call, and no memory note made before is used
        (`forget_everything.go_on_afresh` resets the rest)."""
        self._erased_at = time.time()
        self._turn_memory.cancel()

    def _unscripted(self, text: str) -> str:
        # Said in place of a reply: the session logs it as an assistant message, which is not
        # conversation.
        self._unlogged.append(text)
        return text

    # --- per turn -----------------------------------------------------------------------------

    async def with_turn_context(self, chat_ctx: llm.ChatContext) -> llm.ChatContext:
        """`chat_ctx` plus one memory note (a user-role message) right before the latest user
        message.

        Idempotent: llm_node runs again after a tool call with the same user message, and gets
        the same note without a second retrieval, unless something was forgotten meanwhile:
        then the note is looked up afresh (`turn_memory`).
        """
        watcher = self.watcher
        return await self._turn_memory.with_note(
            chat_ctx, watcher.user_turn if watcher is not None else lambda: None
        )

    def heard(self, transcript: str, *, final: bool) -> None:
        """A transcript of the turn in progress: start its memory lookup right away.

        Turn detection still waits (endpointing) after the final transcript; the lookup runs
        in that wait, and the LLM call picks up the finished block instead of starting one.
        """
        if not final or not transcript.strip():
            return
        # A spoken turn is its final transcripts joined with spaces.
        heard = f"{self._heard} {transcript.strip()}".strip()
        # Past the size limit the turn will be set aside: nothing of it is looked up, and no
        # more of it is kept than shows it is too long.
        self._heard = heard[: MAX_UTTERANCE_CHARS + 1]
        if len(heard) > MAX_UTTERANCE_CHARS:
            return
        if (self._turn_memory.prefetching(self._heard) or self.inspect(self._heard).flagged
                or self.addressed(self._heard) is not None):
            # A flagged turn will be refused, and one calling another companion is that
            # companion's: nothing of it is embedded or looked up here.
            return
        recent = [t.text for t in self.conversation.turns[-RECENT_TURNS:]]
        self._turn_memory.prefetch(self._heard, recent)

    async def context_for_turn(self, text: str, recent_turns: Sequence[str]) -> str | None:
        """Memories, profile and mood for one user turn (`TurnMemory.note_for`)."""
        return await self._turn_memory.note_for(text, recent_turns)

    async def _rag_block(
        self, text: str, recent_turns: Sequence[str], budget_ms: float | None
    ) -> str | None:
        return await self.services.rag.context_for_turn(
            user_id=self.guard.user_id,
            companion_id=self.guard.companion_id,
            text=text,
            recent_turns=recent_turns,
            profile_line=profile_line(self.profile),
            follow_ups=[f.topic for f in self.greeting.follow_ups],
            budget_ms=budget_ms,
        )

    async def _mood_line(self, text: str) -> str | None:
        try:
            mood = await asyncio.wait_for(
                self.services.personality.on_user_turn(self.guard.user_id, self.companion, text),
                timeout=self.services.settings.rag_budget_ms / 1000,
            )
        except Exception as exc:
            # Mood colours the reply; the turn goes on without it.
            logger.warning("mood update skipped (%s)", type(exc).__name__)
            return None
        return self.services.personality.describe(
            self.companion, mood, self.personality.quirks, self.personality.needs
        )

    def log_message(self, role: str, text: str, *, modality: str = "text") -> None:
        """Record a user turn or reply; returns at once (batcher and background tasks)."""
        if role not in ("user", "assistant") or not text.strip():
            return
        services = self.services
        services.conversations.add_message(self.conversation, role, text, modality=modality)
        services.memory.log_turn(
            self.guard.user_id, self.guard.companion_id, self.conversation.id, role, text
        )
        services.consolidation.note_turn(self.conversation.id)
        if role == "assistant":
            services.personality.observe_reply(self.guard.user_id, self.companion, text)

    # --- end ------------------------------------------------------------------------------------

    async def close(self, *, wait: bool = True, deadline: Deadline | None = None) -> None:
        """End the conversation: summary and follow-ups, mood drift, then memory consolidation
        and the profile refresh, in that order; with `deadline` (the job's end), each step gets
        what is left of it and what it has not done by then is given up (writes it queued are
        kept). Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        started = time.perf_counter()
        services = self.services
        logger.debug("closing the session")
        if self.watcher is not None:
            await self.watcher.aclose()
        self._turn_memory.cancel()
        try:
            async with within(deadline):
                await services.conversations.end(self.conversation, wait=wait, deadline=deadline)
        except Exception as exc:
            logger.warning("ending the conversation failed (%s)", type(exc).__name__)
        try:
            async with within(deadline):
                await services.personality.end_session(self.guard.user_id, self.companion)
        except Exception as exc:
            logger.warning("ending the personality session failed (%s)", type(exc).__name__)
        if any(t.role == "user" for t in self.conversation.turns):
            # Consolidation, then the profile summary from what it saved; what does not
            # finish (by the deadline) is recorded in the session row and done later
            # (`after_session`).
            await services.after_session.finish(
                self.conversation.id, self.guard.user_id, self.guard.companion_id,
                deadline=deadline,
            )
        logger.info(
            "session closed (turns=%s, ms=%.0f)",
            len(self.conversation.turns), (time.perf_counter() - started) * 1000,
        )
