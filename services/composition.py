"""The composition root: builds the shared infrastructure and every service once per job, and
opens one person's session with one companion on top of them.

Nothing else constructs services. `Services.aclose()` finishes background work, drains the
batcher and closes in the reverse order of construction.

A session screens each user message for prompt injection before it is answered, logged or
remembered: a flagged one is refused, filed as an incident and kept from the LLM for good.

A turn that opens by calling another of the person's companions by name ("Luna, ...") belongs
to that companion: it is kept out of this session, which hands over to a new session of the
called companion (`open_successor`, `hand_over`) and closes in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from livekit.agents import AgentSession, llm
from livekit.agents.voice.events import ConversationItemAddedEvent, ErrorEvent

from core.config import Settings
from core.dates import utc_now
from core.errors import InvalidIdentity
from core.latency import LatencyWindow
from core.prompts import prompt, render
from core.validators import WriteGuard
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.embeddings import Embedder, LocalEmbedder, build_embedder, check_dimension
from infrastructure.redis_cache import RedisCache
from rag_system import RetrievalEngine
from services.companion_service import Companion, CompanionService
from services.consolidation_service import ConsolidationService
from services.conversation_service import (
    ConversationService,
    ConversationSession,
    GreetingContext,
    describe_gap,
)
from services.memory_service import MemoryService
from services.onboarding_service import OnboardingData, OnboardingService
from services.personality_service import PersonalityService, PersonalitySnapshot
from services.proactive_service import ProactiveService, SilenceWatcher
from services.profile_service import ProfileService, profile_line
from services.rag_service import RAGService
from services.rate_limiter import RateLimiter
from services.security_service import InjectionVerdict, SecurityService
from services.user_service import UserProfile, UserService

logger = logging.getLogger(__name__)

MEMORY_ITEM_PREFIX = "memory_context_"
RECENT_TURNS = 6
MAX_PREFETCHES = 4
MAX_HEARD_CHARS = 4_000
MAX_CACHED_VERDICTS = 64
MAX_UNLOGGED = 8
# Turns addressed to another companion, waiting for the session to commit them.
MAX_PENDING_COMMITS = 8
APOLOGY_PROMPT = "llm_unavailable"
SWITCH_PROMPT = "companion_switch"
# Metrics only a spoken user turn, or the reply to one, carries.
_SPOKEN_METRICS = {"user": "stopped_speaking_at", "assistant": "e2e_latency"}
CHARACTER_PHRASES = {
    "friend": "a close friend",
    "partner": "a loving partner",
    "mentor": "a wise mentor",
    "parent": "a caring parent figure",
    "sibling": "a sibling",
    "child": "a curious, cheerful child",
}


@dataclass
class Services:
    """Every shared resource and service of one job, built by `build_services`."""

    settings: Settings
    pool: ConnectionPool
    cache: RedisCache
    embedder: Embedder
    batcher: DatabaseBatcher
    users: UserService
    companions: CompanionService
    memory: MemoryService
    retrieval: RetrievalEngine
    rag: RAGService
    personality: PersonalityService
    proactive: ProactiveService
    conversations: ConversationService
    onboarding: OnboardingService
    profiles: ProfileService
    consolidation: ConsolidationService
    security: SecurityService
    limits: RateLimiter
    owns_embedder: bool = True
    closed: bool = False
    background: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)

    def spawn(self, work: Coroutine[Any, Any, Any], *, what: str) -> None:
        """Run `work` in the background; `aclose` waits for it before closing anything."""
        if self.closed:
            work.close()
            logger.warning("services are closed; skipped %s", what)
            return
        task = asyncio.ensure_future(_quietly(work, what))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def aclose(self) -> None:
        """Finish background work, drain the batcher, then close in reverse order."""
        if self.closed:
            return
        self.closed = True
        started = time.perf_counter()
        # Sessions closing in the background still write through every service below.
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)
        # Services first: their background tasks still write through the batcher and pool.
        for name, closer in (
            ("conversations", self.conversations.aclose),
            ("profiles", self.profiles.aclose),
            ("consolidation", self.consolidation.aclose),
            ("rag", self.rag.aclose),
            ("memory", self.memory.aclose),
            ("batcher", self.batcher.aclose),
            ("embedder", self.embedder.aclose if self.owns_embedder else None),
            ("cache", self.cache.aclose),
            ("pool", self.pool.aclose),
        ):
            if closer is None:
                continue
            logger.debug("closing %s", name)
            try:
                await closer()
            except Exception as exc:
                # Keep closing the rest: a failed drain must not leave the pool open.
                logger.warning("closing %s failed (%s)", name, type(exc).__name__)
        logger.info("services closed (ms=%.0f)", (time.perf_counter() - started) * 1000)


async def _quietly(work: Coroutine[Any, Any, Any], what: str) -> None:
    try:
        await work
    except Exception as exc:
        logger.warning("%s failed (%s)", what, type(exc).__name__)


async def build_services(
    settings: Settings, *, local_embedder: LocalEmbedder | None = None
) -> Services:
    """Open the pool, cache, embedder and batcher, and build every service on them.

    Args:
        settings: parsed settings.
        local_embedder: the model prewarm loaded (EMBEDDING_PROVIDER=local); owned by the
            caller, so it is not closed with the services.
    """
    opened: list[Any] = []
    try:
        pool = await ConnectionPool.create(settings)
        opened.append(pool)
        cache = await RedisCache.create(settings)
        opened.append(cache)
        embedder = build_embedder(settings, pool, local=local_embedder)
        if embedder is not local_embedder:
            opened.append(embedder)
        await check_dimension(pool, embedder)
        batcher = DatabaseBatcher(pool=pool, settings=settings)
        await batcher.start()
        opened.append(batcher)
    except BaseException:
        for resource in reversed(opened):
            try:
                await resource.aclose()
            except Exception as exc:
                logger.warning("cleanup after a failed start failed (%s)", type(exc).__name__)
        raise

    users = UserService(pool=pool, cache=cache, settings=settings)
    companions = CompanionService(pool=pool, cache=cache, settings=settings)
    memory = MemoryService(
        pool=pool, cache=cache, batcher=batcher, embedder=embedder, settings=settings
    )
    retrieval = RetrievalEngine(pool=pool, embedder=embedder, settings=settings)
    rag = RAGService(engine=retrieval, memory=memory, cache=cache, settings=settings)
    personality = PersonalityService(pool=pool, cache=cache, batcher=batcher, settings=settings)
    proactive = ProactiveService(pool=pool, personality=personality, settings=settings)
    conversations = ConversationService(
        pool=pool, cache=cache, batcher=batcher, settings=settings
    )
    onboarding = OnboardingService(users=users, companions=companions)
    profiles = ProfileService(pool=pool, users=users, memory=memory, settings=settings)
    consolidation = ConsolidationService(pool=pool, memory=memory, settings=settings)
    security = SecurityService(batcher=batcher, settings=settings)
    limits = RateLimiter(cache=cache, settings=settings, pool=pool)
    await consolidation.start()
    return Services(
        settings=settings, pool=pool, cache=cache, embedder=embedder, batcher=batcher,
        users=users, companions=companions, memory=memory, retrieval=retrieval, rag=rag,
        personality=personality, proactive=proactive, conversations=conversations,
        onboarding=onboarding, profiles=profiles, consolidation=consolidation,
        security=security, limits=limits, owns_embedder=embedder is not local_embedder,
    )


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
    prefetch_hits: int = 0
    incidents: int = 0
    _context_for: tuple[str, str | None] | None = None
    _heard: str = ""
    _prefetched: dict[str, asyncio.Task[str | None]] = field(default_factory=dict)
    _verdicts: OrderedDict[str, InjectionVerdict] = field(default_factory=OrderedDict)
    # Ids of refused user messages: never logged, never sent to the LLM.
    _refused: set[str] = field(default_factory=set)
    _last_incident: str | None = None
    # What the companion said in place of a reply (refusals, apologies): not conversation.
    # Bounded: a refusal generated ahead of a turn may never be spoken.
    _unlogged: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_UNLOGGED))
    # Turns addressed to another companion, by message id: resolved with their modality once
    # the session commits them to the conversation.
    _commits: OrderedDict[str, asyncio.Future[str]] = field(default_factory=OrderedDict)
    _listeners: list[tuple[str, Callable[[Any], None]]] = field(default_factory=list)
    _closed: bool = False

    def __post_init__(self) -> None:
        self.guard = WriteGuard(self.profile.id, self.companion.id)
        self.user = SessionUser(self.profile.id, self.companion.id)

    @property
    def user_id(self) -> uuid.UUID:
        return self.profile.id

    # --- instructions -------------------------------------------------------------------------

    def instructions(self) -> str:
        """The companion's standing instructions: persona, what it knows, onboarding."""
        persona = self.companion.persona.strip()
        character = CHARACTER_PHRASES.get(
            self.companion.character, f"the user's {self.companion.character}"
        )
        return render(
            "companion",
            companion=self.companion.name,
            character_phrase=character,
            persona=persona,
            profile_line=profile_line(self.profile) or "Nothing yet: this may be your first talk.",
            onboarding=self.services.onboarding.instructions(self.profile),
        )

    def greeting_instructions(self) -> str:
        """The first reply's instructions: a greeting, or the answer to the turn that called
        this companion by name."""
        if self.opening_turn is not None:
            text = self._switch_instructions()
        else:
            text = self.services.conversations.greeting_instructions(
                self.greeting,
                companion_name=self.companion.name,
                resumed=self.conversation.resumed,
            )
        mood = self.services.personality.describe(
            self.companion, self.personality.mood, self.personality.quirks,
            self.personality.needs,
        )
        return f"{text}\n{mood}"

    def _switch_instructions(self) -> str:
        greeting = self.greeting
        if self.conversation.resumed:
            history = "You were talking with them only moments ago: carry on from there."
        elif greeting.session_count == 0:
            history = "You have not talked with them before: this is your first conversation."
        else:
            since = greeting.last_activity_at or greeting.last_started_at
            gap = describe_gap(utc_now() - since) if since else "a while"
            history = f"It has been {gap} since you two last talked."
            if greeting.last_summary:
                history += f" Last time you talked about: {greeting.last_summary}"
        follow_ups = "; ".join(
            f.topic + (f" ({f.detail})" if f.detail else "") for f in greeting.follow_ups
        )
        name = self.profile.address_as
        return render(
            SWITCH_PROMPT,
            companion=self.companion.name,
            name_line=f"Their name is {name}." if name else "",
            history_line=history,
            follow_up_line=f"Later, if it fits naturally, ask about: {follow_ups}"
            if follow_ups else "",
        )

    def history_chat_ctx(self) -> llm.ChatContext:
        """A resumed session's recent turns, so the model continues the same conversation,
        and the turn that called this companion by name, if one did."""
        chat_ctx = llm.ChatContext.empty()
        for turn in self.conversation.history:
            if turn.role in ("user", "assistant"):
                chat_ctx.add_message(role=turn.role, content=turn.text)
        if self.opening_turn is not None:
            chat_ctx.add_message(role="user", content=self.opening_turn)
        return chat_ctx

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
        pending = _pending_user_message(chat_ctx)
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

    async def open_successor(
        self, companion: Companion, text: str, *, modality: str
    ) -> CompanionSession:
        """A session with `companion`, for the turn `text` that called it by name: its own
        conversation (the turn is logged there), memories, mood and greeting context."""
        successor = await open_session(
            self.services, user_id=self.guard.user_id, room=self.conversation.room,
            companion=companion,
        )
        successor.opening_turn, successor.opening_modality = text, modality
        successor.log_message("user", text, modality=modality)
        return successor

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
            self._last_incident = None  # the conversation moved on
            text = item.text_content
            spoken = _SPOKEN_METRICS.get(item.role, "") in item.metrics
            modality = "voice" if spoken else "text"
            if item.role == "user":
                self._heard = ""  # the turn is committed; the next transcript starts a new one
                if self.screen(item).flagged:
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

        listeners: list[tuple[str, Callable[[Any], None]]] = [
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
            "refused_messages": len(self._refused),
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
        key = _turn_key(text)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = self.services.security.inspect(
                text, user_id=self.guard.user_id, companion_id=self.guard.companion_id
            )
            self._verdicts[key] = verdict
            while len(self._verdicts) > MAX_CACHED_VERDICTS:
                self._verdicts.popitem(last=False)
        return verdict

    def screen(self, message: llm.ChatMessage) -> InjectionVerdict:
        """Screen one user message; a flagged one is filed as an incident (once) and from
        then on is neither logged nor sent to the LLM."""
        text = message.text_content or ""
        verdict = self.inspect(text)
        if not verdict.flagged or message.id in self._refused:
            return verdict
        self._refused.add(message.id)
        # A refused spoken turn is never committed: its transcript must not run on into the
        # next turn's.
        self._heard = ""
        key = _turn_key(text)
        # One attempt may be seen twice under two message ids: generated ahead of its end
        # (preemptive generation), then at its end. Until the conversation moves on, the same
        # text is the same incident.
        if key != self._last_incident:
            self._last_incident = key
            self.incidents += 1
            self.services.security.record_incident(
                self.guard.user_id, self.guard.companion_id, verdict, text
            )
        return verdict

    def refusal(self, verdict: InjectionVerdict) -> str:
        """The polite refusal for a flagged message; it is not logged as conversation."""
        text = self.services.security.refusal(verdict)
        self._unlogged.append(text)
        return text

    def screen_context(
        self, chat_ctx: llm.ChatContext
    ) -> tuple[llm.ChatContext, InjectionVerdict | None]:
        """`chat_ctx` without refused user messages, and the verdict when its unanswered user
        message is flagged (then the caller refuses instead of calling the LLM).

        A typed message enters the history before the reply is generated, so a refused one
        stays there; it is taken out of every later LLM call here.
        """
        pending = _pending_user_message(chat_ctx)
        if pending is not None:
            verdict = self.screen(pending)
            if verdict.flagged:
                return chat_ctx, verdict
        if not self._refused or not any(i.id in self._refused for i in chat_ctx.items):
            return chat_ctx, None
        return llm.ChatContext([i for i in chat_ctx.items if i.id not in self._refused]), None

    # --- per turn -----------------------------------------------------------------------------

    async def with_turn_context(self, chat_ctx: llm.ChatContext) -> llm.ChatContext:
        """`chat_ctx` plus one memory message after the latest user message.

        Idempotent: llm_node runs again after a tool call with the same user message, and gets
        the same block without a second retrieval; a context that has the block already is
        returned unchanged.
        """
        items = chat_ctx.items
        index = next(
            (i for i in range(len(items) - 1, -1, -1)
             if items[i].type == "message" and items[i].role == "user"),  # type: ignore[union-attr]
            None,
        )
        if index is None:
            return chat_ctx
        message = items[index]
        marker = MEMORY_ITEM_PREFIX + message.id
        if chat_ctx.get_by_id(marker) is not None:
            return chat_ctx
        if self._context_for is not None and self._context_for[0] == message.id:
            block = self._context_for[1]
        else:
            text = message.text_content or ""  # type: ignore[union-attr]
            recent = [
                m.text_content or "" for m in chat_ctx.messages()[:-1]
                if m.role in ("user", "assistant") and m.id != message.id
            ][-RECENT_TURNS:]
            block = await self.context_for_turn(text, recent)
            self._context_for = (message.id, block)
            if self.watcher is not None:
                self.watcher.user_turn()
        if not block:
            return chat_ctx
        out = chat_ctx.copy()
        out.items.insert(
            index + 1,
            llm.ChatMessage(
                id=marker, role="system", content=[block], created_at=message.created_at
            ),
        )
        return out

    def heard(self, transcript: str, *, final: bool) -> None:
        """A transcript of the turn in progress: start its memory lookup right away.

        Turn detection still waits (endpointing) after the final transcript; the lookup runs
        in that wait, and the LLM call picks up the finished block instead of starting one.
        """
        if not final or not transcript.strip():
            return
        # A spoken turn is its final transcripts joined with spaces.
        self._heard = f"{self._heard} {transcript.strip()}".strip()[-MAX_HEARD_CHARS:]
        key = _turn_key(self._heard)
        if (key in self._prefetched or self.inspect(self._heard).flagged
                or self.addressed(self._heard) is not None):
            # A flagged turn will be refused, and one calling another companion is that
            # companion's: nothing of it is embedded or looked up here.
            return
        while len(self._prefetched) >= MAX_PREFETCHES:
            self._prefetched.pop(next(iter(self._prefetched))).cancel()
        recent = [t.text for t in self.conversation.turns[-RECENT_TURNS:]]
        self._prefetched[key] = asyncio.ensure_future(self._rag_block(self._heard, recent))

    async def context_for_turn(self, text: str, recent_turns: Sequence[str]) -> str | None:
        """Memories, profile and mood for one user turn, as one compact block (or None)."""
        started = time.perf_counter()
        prefetched = self._prefetched.pop(_turn_key(text), None)
        if prefetched is not None:
            self.prefetch_hits += 1
        rag_block, mood_line = await asyncio.gather(
            prefetched if prefetched is not None else self._rag_block(text, recent_turns),
            self._mood_line(text),
        )
        self._forget_prefetches()
        self.turn_ms.add((time.perf_counter() - started) * 1000)
        parts = [p for p in (rag_block, mood_line) if p]
        return "\n".join(parts) if parts else None

    async def _rag_block(self, text: str, recent_turns: Sequence[str]) -> str | None:
        return await self.services.rag.context_for_turn(
            user_id=self.guard.user_id,
            companion_id=self.guard.companion_id,
            text=text,
            recent_turns=recent_turns,
            profile_line=profile_line(self.profile),
            follow_ups=[f.topic for f in self.greeting.follow_ups],
        )

    def _forget_prefetches(self) -> None:
        for task in self._prefetched.values():
            task.cancel()
        self._prefetched.clear()

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

    async def close(self, *, wait: bool = True) -> None:
        """End the conversation: summary and follow-ups, mood drift, memory consolidation and a
        profile refresh. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        started = time.perf_counter()
        services = self.services
        logger.debug("closing the session")
        if self.watcher is not None:
            await self.watcher.aclose()
        self._forget_prefetches()
        try:
            await services.conversations.end(self.conversation, wait=wait)
        except Exception as exc:
            logger.warning("ending the conversation failed (%s)", type(exc).__name__)
        try:
            await services.personality.end_session(self.guard.user_id, self.companion)
        except Exception as exc:
            logger.warning("ending the personality session failed (%s)", type(exc).__name__)
        if any(t.role == "user" for t in self.conversation.turns):
            services.consolidation.end_session(self.conversation.id)
            services.profiles.schedule_refresh(self.guard.user_id, self.guard.companion_id)
        logger.info(
            "session closed (turns=%s, ms=%.0f)",
            len(self.conversation.turns), (time.perf_counter() - started) * 1000,
        )


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
        profile, companion = await asyncio.gather(
            services.onboarding.apply(user_id, profile, onboarding),
            _companion_for(services, user_id, onboarding),
        )
    else:
        profile = await services.onboarding.apply(user_id, profile, onboarding)
    greeting, snapshot, summary, companions = await asyncio.gather(
        services.conversations.greeting_context(user_id, companion.id),
        services.personality.snapshot(user_id, companion),
        services.users.companion_summary(user_id, companion.id),
        services.companions.list(user_id),
    )
    # What this companion wrote about them; another companion's summary never comes here.
    profile = replace(profile, profile_summary=summary)
    # Last-seen is bookkeeping: it runs alongside the session insert, not after it.
    conversation, _ = await asyncio.gather(
        services.conversations.start(user_id, companion.id, room=room, context=greeting),
        services.users.touch(user_id),
    )
    if greeting.follow_ups and not conversation.resumed:
        services.conversations.mark_raised(greeting.follow_ups)
    session = CompanionSession(
        services=services, profile=profile, companion=companion, conversation=conversation,
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


def _pending_user_message(chat_ctx: llm.ChatContext) -> llm.ChatMessage | None:
    """The user message the next reply answers: the latest turn, if the user said it."""
    for item in reversed(chat_ctx.items):
        if isinstance(item, llm.ChatMessage) and item.role in ("user", "assistant"):
            return item if item.role == "user" else None
    return None


def _turn_key(text: str) -> str:
    return " ".join(text.split()).casefold()
