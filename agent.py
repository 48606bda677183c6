"""The companion's LiveKit entry point: prewarm, the CompanionAgent and the room entrypoint.

    python agent.py console [--text]     talk in the terminal (the user is DEV_USER_ID)
    python agent.py dev | start          serve rooms of a LiveKit server (LIVEKIT_URL, ...)
    python agent.py download-files       fetch plugin files (nothing is needed offline)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from livekit.agents import (
    Agent,
    AgentServer,
    AgentSession,
    APIConnectOptions,
    JobContext,
    JobProcess,
    ModelSettings,
    RunContext,
    StopResponse,
    ToolError,
    cli,
    function_tool,
    get_job_context,
    llm,
    tts,
)
from livekit.agents.types import NOT_GIVEN, NotGiven
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.plugins import openai as lk_openai
from livekit.plugins import silero

from core.config import EmbeddingProvider, Settings, load_settings
from core.errors import CompanionError, ConfigError, InvalidIdentity
from livekit_layer.companion_session import CompanionSession, SessionUser
from livekit_layer.session_open import open_session, open_successor
from services.composition import Services, build_services
from services.memory.profile_service import profile_line
from services.people.companion_service import Companion
from services.people.onboarding_service import OnboardingData
from services.people.user_service import resolve_identity
from uplift_tts import build_tts

logger = logging.getLogger("companion.agent")

# After the first immediate retry; a voice user is waiting, so keep it short.
LLM_RETRY_INTERVAL_S = 1.0
NEEDS_LLM = ("console", "dev", "start", "connect")
NEEDS_SERVER = ("dev", "start", "connect")
MISSING_LLM = (
    "No language model is configured. Set OPENAI_API_KEY for OpenAI, or OPENAI_BASE_URL for an "
    "OpenAI-compatible server (e.g. OPENAI_BASE_URL=http://localhost:11434/v1 for Ollama), in "
    "the environment or in .env."
)
MISSING_SERVER = (
    "No LiveKit server is configured. Set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET "
    "(LiveKit Cloud or `livekit-server --dev`), or try `python agent.py console` locally."
)


def prewarm(proc: JobProcess) -> None:
    """Once per job process: settings, Silero VAD and (EMBEDDING_PROVIDER=local) the embedder.

    The pool, cache and batcher open in the job itself: they are bound to the job's event loop,
    which does not exist yet here.
    """
    settings = load_settings()
    proc.userdata["settings"] = settings
    proc.userdata["vad"] = silero.VAD.load()
    if settings.embedding_provider is EmbeddingProvider.LOCAL:
        from infrastructure.embeddings import LocalEmbedder

        proc.userdata["embedder"] = LocalEmbedder.load()


@contextmanager
def tool_errors() -> Iterator[None]:
    """Errors the model should see become ToolError with their message and suggestion."""
    try:
        yield
    except CompanionError as err:
        raise ToolError(str(err)) from None


class CompanionAgent(Agent):
    """The companion. Every tool is thin: it checks the session's identity, calls one service.

    A turn that opens with the name of another of the person's companions ("Luna, ...") hands
    the session off to a new CompanionAgent for that companion, which answers it.
    """

    def __init__(self, companion: CompanionSession) -> None:
        super().__init__(
            instructions=companion.instructions(),
            chat_ctx=companion.history_chat_ctx(),
            tts=companion_voice(companion),
        )
        self._c = companion

    @property
    def companion(self) -> CompanionSession:
        """The person and companion this agent talks for."""
        return self._c

    def successor(self, companion: CompanionSession) -> CompanionAgent:
        """The agent that takes over when the person calls another companion by name."""
        return type(self)(companion)

    async def on_enter(self) -> None:
        # A greeting, or (after a hand-off) the answer to the turn that called this companion.
        self.session.generate_reply(instructions=self._c.greeting_instructions())

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        # Spoken turns only: a flagged one is refused before it enters the chat context.
        verdict = self._c.screen(new_message)
        if verdict.flagged:
            self.session.say(self._c.refusal(verdict))
            raise StopResponse()

    async def llm_node(
        self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterable[llm.ChatChunk | str]:
        # Here rather than on_user_turn_completed: this runs for typed and spoken turns alike.
        chat_ctx, refused = self._c.screen_context(chat_ctx)
        if refused is not None:
            # A typed injection (or a spoken one generated preemptively): never sent on.
            yield self._c.refusal(refused)
            return
        addressed = self._c.addressed_turn(chat_ctx)
        if addressed is not None and await self._hand_off(*addressed):
            return  # this companion says nothing; the called one answers
        chat_ctx = await self._c.with_turn_context(chat_ctx)
        async for chunk in Agent.default.llm_node(self, chat_ctx, tools, model_settings):
            yield chunk

    async def _hand_off(self, message: llm.ChatMessage, to: Companion) -> bool:
        """Give the session to `to` for a turn that called it by name; False if it failed
        (then this companion answers, and the turn is logged here)."""
        # Here for typed and spoken turns alike, but a spoken one may be generated ahead of
        # its end: nothing changes hands until the session commits the turn (a discarded
        # guess is cancelled while it waits).
        modality = await self._c.committed(message.id)
        text = message.text_content or ""
        try:
            successor = await open_successor(self._c, to, text, modality=modality)
        except Exception as exc:
            logger.warning("companion switch failed (%s)", type(exc).__name__)
            self._c.log_message("user", text, modality=modality)
            return False
        self._c.hand_over(self.session, successor)
        # The session drains this agent's reply (empty) before the successor's on_enter.
        self.session.update_agent(self.successor(successor))
        log_fields_for(successor)
        return True

    def _writer(self, context: RunContext[Any]) -> SessionUser:
        """The identity writes go to: the session's, and only if it is this agent's."""
        user = context.session.userdata
        with tool_errors():
            if not isinstance(user, SessionUser):
                raise InvalidIdentity("this session has no user", suggestion="reconnect")
            self._c.guard.check(user.user_id, user.companion_id)
        return user

    @asynccontextmanager
    async def _tool(
        self, context: RunContext[Any], *, writes: bool = False, adds: int = 0
    ) -> AsyncIterator[SessionUser]:
        """What every tool does around its one service call: check identity, rate limits and
        quota, screen the model's arguments, hold off silence nudges, map errors to ToolError.
        """
        user = self._writer(context)
        services = self._c.services
        call = context.function_call
        with self._c.tool_running(), tool_errors():
            await services.limits.check_tool_call(user.user_id, call.name)
            if writes:
                await services.limits.check_memory_write(user.user_id)
            if adds:
                await services.limits.check_memory_quota(user.user_id, adding=adds)
            args = json.loads(call.arguments or "{}")
            verdict = services.security.inspect_tool_args(
                args, user_id=user.user_id, companion_id=user.companion_id
            )
            if verdict.flagged:
                services.security.record_incident(
                    user.user_id, user.companion_id, verdict, call.arguments
                )
                raise ToolError(services.security.refusal(verdict))
            yield user

    @function_tool
    async def remember(
        self, context: RunContext[Any], category: str, key: str, value: str
    ) -> str:
        """Save something the user told you, to remember it in later conversations.

        Args:
            category: FACT, PREFERENCE, PERSON, EVENT, GOAL or BOUNDARY
            key: a short snake_case name for it, such as dog_name or favorite_food
            value: what to remember, such as "Rex, a golden retriever"
        """
        async with self._tool(context, writes=True, adds=1) as user:
            memory = await self._c.services.memory.remember(
                user.user_id, user.companion_id, category, key, value,
                source={"session_id": str(self._c.conversation.id), "via": "tool"},
            )
        return json.dumps({"saved": {"category": memory.category, memory.key: memory.value}})

    @function_tool
    async def recall(self, context: RunContext[Any], query: str) -> str:
        """Search what you remember about the user and your past conversations.

        Args:
            query: what to look for, such as "their dog" or "the job interview"
        """
        async with self._tool(context) as user:
            found = await self._c.services.retrieval.search(
                user.user_id, user.companion_id, query, k=5
            )
        return json.dumps({"memories": [
            {"text": s.memory.content, "when": s.memory.occurred_at.date().isoformat()}
            for s in found
        ]})

    @function_tool
    async def forget(self, context: RunContext[Any], key: str) -> str:
        """Forget a saved memory when the user asks you to.

        Args:
            key: the key it was saved under, such as dog_name
        """
        async with self._tool(context, writes=True) as user:
            count = await self._c.services.memory.forget(user.user_id, user.companion_id, key=key)
            await self._c.services.limits.forget_usage(user.user_id)
        if count == 0:
            raise ToolError(f"nothing is saved under {key!r}; call what_do_you_know_about_me "
                            "to see the keys")
        return json.dumps({"forgotten": key, "versions": count})

    @function_tool
    async def what_do_you_know_about_me(self, context: RunContext[Any]) -> str:
        """List everything you have saved about the user, to tell them when they ask."""
        async with self._tool(context) as user:
            memories = await self._c.services.memory.current(user.user_id, user.companion_id)
        return json.dumps({
            "profile": profile_line(self._c.profile) or "nothing yet",
            "memories": [f"{m.key.replace('_', ' ')}: {m.value}" for m in memories if m.key],
        })

    @function_tool
    async def update_profile(
        self,
        context: RunContext[Any],
        name: str | None = None,
        preferred_name: str | None = None,
        interests: list[str] | None = None,
        timezone: str | None = None,
    ) -> str:
        """Update the user's profile with what you learned; leave unknown fields empty.

        Args:
            name: their name
            preferred_name: how they want to be addressed
            interests: things they enjoy, replacing the current list
            timezone: IANA time zone, such as Europe/Berlin
        """
        fields = {k: v for k, v in (("display_name", name), ("preferred_name", preferred_name),
                                    ("interests", interests), ("timezone", timezone)) if v}
        if not fields:
            raise ToolError("give at least one of name, preferred_name, interests, timezone")
        async with self._tool(context, writes=True):
            profile = await self._c.update_profile(**fields)
            await self.update_instructions(self._c.instructions())
        return json.dumps(
            {"profile": profile_line(profile), "onboarding": profile.onboarding_state}
        )

    @function_tool
    async def get_connection_pool_stats(self, context: RunContext[Any]) -> str:
        """Database connection pool health (getConnectionPoolStats): size, use, errors."""
        async with self._tool(context):
            return json.dumps(self._c.services.pool.stats())

    @function_tool
    async def get_redis_cache_stats(self, context: RunContext[Any]) -> str:
        """Cache health (getRedisCacheStats): backend, hits, misses, fallbacks."""
        async with self._tool(context):
            return json.dumps(self._c.services.cache.stats(), default=str)

    @function_tool
    async def get_database_batch_stats(self, context: RunContext[Any]) -> str:
        """Write batcher health (getDatabaseBatchStats): queued, written, retries, spooled."""
        async with self._tool(context):
            return json.dumps(self._c.services.batcher.stats(), default=str)

    @function_tool
    async def get_memory_stats(self, context: RunContext[Any]) -> str:
        """Memory health (getMemoryStats): this user's memories, retrieval, turn timings, and
        the injection screening and rate limits that guard them."""
        services = self._c.services
        async with self._tool(context) as user:
            stats = await services.rag.memory_stats(user.user_id, user.companion_id)
        return json.dumps({
            **stats, "embedder": services.embedder.stats(), "turn_ms": self._c.turn_ms.summary(),
            "session": self._c.stats(), "security": services.security.stats(),
            "limits": services.limits.stats(),
        }, default=str)


def connect_options(settings: Settings) -> SessionConnectOptions:
    """Bounded LLM retries and timeout: after them the session reports the error, and the
    companion apologizes (CompanionSession.attach) instead of going silent."""
    return SessionConnectOptions(
        llm_conn_options=APIConnectOptions(
            max_retry=settings.openai_max_retries,
            retry_interval=LLM_RETRY_INTERVAL_S,
            timeout=settings.openai_timeout_s,
        )
    )


def build_llm(services: Services) -> lk_openai.LLM:
    """The chat model over the shared client; the session retries, so the SDK does not (its
    retries on top would multiply the wait)."""
    return lk_openai.LLM(
        model=services.settings.llm_model, client=services.pool.openai.with_options(max_retries=0)
    )


def build_session(ctx: JobContext, companion: CompanionSession) -> AgentSession[SessionUser]:
    """STT, LLM and TTS from settings, all over the shared OpenAI-compatible client."""
    services = companion.services
    settings = services.settings
    return AgentSession(
        stt=lk_openai.STT(model=settings.stt_model, client=services.pool.openai),
        llm=build_llm(services),
        tts=build_tts(settings, http_session=services.pool.http),
        vad=ctx.proc.userdata["vad"],
        userdata=companion.user,
        conn_options=connect_options(settings),
    )


def companion_voice(companion: CompanionSession) -> tts.TTS | NotGiven:
    """The companion's own voice, or the session's default TTS when it has none.

    Uplift voice ids look like `v_...`; anything else names an OpenAI voice. Set per agent, so a
    hand-off to another companion also changes the voice.
    """
    voice = companion.companion.voice
    if not voice:
        return NOT_GIVEN
    services = companion.services
    field = "upliftai_voice_id" if voice.startswith("v_") else "tts_voice"
    settings = services.settings.model_copy(update={field: voice})
    return build_tts(settings, http_session=services.pool.http)


def log_fields_for(companion: CompanionSession) -> None:
    """Tag the job's log lines with the companion and conversation talking now."""
    try:
        ctx = get_job_context()
    except RuntimeError:
        return  # not inside a job (tests drive sessions directly)
    ctx.log_context_fields = {
        **ctx.log_context_fields, "companion_id": str(companion.companion.id),
        "session_id": str(companion.conversation.id),
    }


def talking_companion(session: AgentSession[Any] | None) -> CompanionSession | None:
    """The session of the companion `session` runs now (None before it started)."""
    if session is None:
        return None
    try:
        agent = session.current_agent
    except RuntimeError:
        return None
    return agent.companion if isinstance(agent, CompanionAgent) else None


server = AgentServer(setup_fnc=prewarm)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    settings = ctx.proc.userdata["settings"]
    participant = await ctx.wait_for_participant()
    try:
        user_id = resolve_identity(
            participant.identity, console=ctx.is_fake_job(), dev_user_id=settings.dev_user_id
        )
    except InvalidIdentity as err:
        # Nothing has been written for this participant; say why and leave the room.
        logger.error("participant refused: identity is not a user id", extra={"error": str(err)})
        ctx.shutdown(reason=f"invalid identity: {err}")
        return
    ctx.log_context_fields = {**ctx.log_context_fields, "user_id": str(user_id)}
    services = await build_services(settings, local_embedder=ctx.proc.userdata.get("embedder"))
    companion: CompanionSession | None = None
    session: AgentSession[SessionUser] | None = None

    async def end_of_job() -> None:
        # One callback, in order: the summary needs the pool the services close afterwards.
        # The companion talking now may not be the first one (called by name since).
        for talking in (companion, talking_companion(session)):
            if talking is not None:
                await talking.close(wait=True)
        await services.aclose()

    ctx.add_shutdown_callback(end_of_job)
    companion = await open_session(
        services, user_id=user_id, room=ctx.room.name,
        onboarding=OnboardingData.from_participant(participant.metadata, participant.attributes),
    )
    log_fields_for(companion)
    session = build_session(ctx, companion)
    companion.attach(session)
    # The participant left or the session failed: end the job, which ends the conversation.
    session.on("close", lambda _: ctx.shutdown(reason="session closed"))
    await session.start(agent=CompanionAgent(companion), room=ctx.room)


def main() -> None:
    command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"companion: {err}", file=sys.stderr)
        sys.exit(2)
    if command in NEEDS_LLM and not settings.has_llm_credentials:
        print(f"companion: {MISSING_LLM}", file=sys.stderr)
        sys.exit(2)
    # The LiveKit CLI reads only the process environment; let .env values reach it too.
    # LOG_LEVEL becomes the CLI's default --log-level: it sets the root logger, so ours too, and
    # job processes inherit it. LiveKit spells WARNING as WARN.
    os.environ.setdefault("LIVEKIT_LOG_LEVEL", settings.log_level.replace("WARNING", "WARN"))
    if settings.livekit_url:
        os.environ.setdefault("LIVEKIT_URL", settings.livekit_url)
    for name, secret in (("LIVEKIT_API_KEY", settings.livekit_api_key),
                         ("LIVEKIT_API_SECRET", settings.livekit_api_secret)):
        if secret is not None:
            os.environ.setdefault(name, secret.get_secret_value())
    if command in NEEDS_SERVER and "--url" not in sys.argv and not os.environ.get("LIVEKIT_URL"):
        print(f"companion: {MISSING_SERVER}", file=sys.stderr)
        sys.exit(2)
    cli.run_app(server)


if __name__ == "__main__":
    main()
