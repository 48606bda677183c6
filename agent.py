"""The companion's LiveKit entry point: prewarm, the CompanionAgent and the room entrypoint.

    python agent.py console [--text]     talk in the terminal (the user is DEV_USER_ID)
    python agent.py dev | start          serve rooms of a LiveKit server (LIVEKIT_URL, ...)
    python agent.py download-files       fetch plugin files (nothing is needed offline)
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterable
from typing import Any

from livekit.agents import (
    Agent,
    AgentSession,
    FlushSentinel,
    JobContext,
    JobProcess,
    ModelSettings,
    RunContext,
    StopResponse,
    ToolError,
    cli,
    function_tool,
    llm,
    utils,
)
from livekit.plugins import silero

from core.config import EmbeddingProvider, load_settings
from core.errors import CompanionError, InvalidIdentity
from infrastructure.local_embedder import LocalEmbedder
from infrastructure.model_clients import tls_context
from livekit_layer.companion_session import CompanionSession, SessionUser
from livekit_layer.forget_everything import forget_everything
from livekit_layer.job import end_job, log_fields_for
from livekit_layer.session_forget import after_forget
from livekit_layer.session_models import (
    build_session,
    companion_stt,
    companion_voice,
    room_options,
)
from livekit_layer.session_open import open_session, open_successor
from livekit_layer.session_voices import SessionVoices
from livekit_layer.tool_calls import tool_call
from livekit_layer.tool_schemas import DeclaredTools
from livekit_layer.worker_server import CompanionServer
from livekit_layer.worker_start import prepare_cli
from services.composition import build_services
from services.memory.profile_service import profile_line
from services.people.companion_service import Companion
from services.people.onboarding_service import OnboardingData
from services.people.user_service import resolve_identity

logger = logging.getLogger("companion.agent")


def prewarm(proc: JobProcess) -> None:
    """Once per job process, before its job arrives: settings, Silero VAD, the TLS context of
    the model-server clients and (EMBEDDING_PROVIDER=local) the embedder.

    Both models run on ONNX Runtime (no torch): well under a second together, inside LiveKit's
    10 s initialize_process_timeout. The pool, cache, batcher and HTTP clients open in the job
    itself: they are bound to the job's event loop, which does not exist yet here. Migrations
    are the worker's (at its start), not the job's.
    """
    settings = load_settings()
    proc.userdata["settings"] = settings
    proc.userdata["vad"] = silero.VAD.load()
    proc.userdata["tls"] = tls_context()
    if settings.embedding_provider is EmbeddingProvider.LOCAL:
        proc.userdata["embedder"] = LocalEmbedder.load()


class CompanionAgent(Agent):
    """The companion. Every tool is thin: it checks the session's identity, calls one service.

    A turn that opens with the name of another of the person's companions ("Luna, ...") hands
    the session off to a new CompanionAgent for that companion, which answers it.
    """

    def __init__(self, companion: CompanionSession) -> None:
        super().__init__(
            instructions=companion.instructions(),
            chat_ctx=companion.history_chat_ctx(),
            stt=companion_stt(companion),
            tts=companion_voice(companion),
        )
        self._c = companion
        self._declared = DeclaredTools()

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
        # Spoken turns only: a refused or too long one is answered before it enters the context.
        instead = self._c.instead_of_reply(new_message)
        if instead is not None:
            self.session.say(instead)
            raise StopResponse()

    async def llm_node(
        self, chat_ctx: llm.ChatContext, tools: list[llm.Tool], model_settings: ModelSettings
    ) -> AsyncIterable[llm.ChatChunk | str | FlushSentinel]:
        # Here rather than on_user_turn_completed: this runs for typed and spoken turns alike.
        chat_ctx, instead = self._c.screen_context(chat_ctx)
        if instead is not None:
            # A typed turn refused or too long (or a spoken one generated preemptively): never
            # sent on, and answered with what the person needs to know.
            yield instead
            return
        addressed = self._c.addressed_turn(chat_ctx)
        if addressed is not None and await self._hand_off(*addressed):
            return  # this companion says nothing; the called one answers
        chat_ctx = await self._c.with_turn_context(chat_ctx)
        # The tools' schemas as built once (livekit rebuilds them per request); calls still
        # run the tools in `tools`.
        declared = self._declared.for_request(tools)
        async for chunk in Agent.default.llm_node(self, chat_ctx, declared, model_settings):
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
        async with tool_call(self._c, context, writes=True) as user:
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
        async with tool_call(self._c, context) as user:
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
        async with tool_call(self._c, context, writes=True) as user:
            done = await self._c.services.memory.forget(user.user_id, user.companion_id, key=key)
        after_forget(self._c, done)
        if done.deferred:
            return json.dumps({"forgotten": key, "note": "forgotten now; the memory store is "
                               "away and erases it as soon as it is back"})
        if done.versions == 0:
            raise ToolError(f"nothing is saved under {key!r}; call what_do_you_know_about_me "
                            "to see the keys")
        return json.dumps({"forgotten": key, "versions": done.versions})

    @function_tool
    async def forget_everything(
        self, context: RunContext[Any], confirm: bool = False, code: str = ""
    ) -> str:
        """Erase everything stored about the user, when they ask you to forget everything
        about them. First call it without confirm: nothing is erased yet; it says what would be
        erased and gives a code. Tell the user and ask them to confirm out loud. Only after
        they say yes, call it again with confirm=true and that code.

        Args:
            confirm: true only when the user has just said yes to erasing everything
            code: the code the first call gave
        """
        async with tool_call(self._c, context, writes=True):
            outcome = await forget_everything(self._c, confirm=confirm, code=code)
        if outcome["erased"]:
            await self.update_instructions(self._c.instructions())
        return json.dumps(outcome, default=str)

    @function_tool
    async def what_do_you_know_about_me(self, context: RunContext[Any]) -> str:
        """Tell the user everything you keep about them: the saved memories, and how much of
        your conversations and the rest you keep."""
        services = self._c.services
        async with tool_call(self._c, context) as user:
            memories = await services.memory.current(user.user_id, user.companion_id)
            stored = await services.person_data.inventory(user.user_id)
        return json.dumps({
            "profile": profile_line(self._c.profile) or "nothing yet",
            "memories": [f"{m.key.replace('_', ' ')}: {m.value}" for m in memories if m.key],
            "summary_of_them": self._c.profile.profile_summary,
            "also_kept": stored.to_json(),
            "forgetting": "forget removes one memory by its key; forget_everything erases "
            "all of it once they confirm",
        }, default=str)

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
        async with tool_call(self._c, context, writes=True):
            profile = await self._c.update_profile(**fields)
            await self.update_instructions(self._c.instructions())
        return json.dumps(
            {"profile": profile_line(profile), "onboarding": profile.onboarding_state}
        )

    @function_tool
    async def get_connection_pool_stats(self, context: RunContext[Any]) -> str:
        """Connection pool health (getConnectionPoolStats): the database pool's size, use and
        errors, and the model servers' HTTP client."""
        services = self._c.services
        async with tool_call(self._c, context):
            return json.dumps({**services.pool.stats(), "model_clients": services.models.stats()})

    @function_tool
    async def get_redis_cache_stats(self, context: RunContext[Any]) -> str:
        """Cache health (getRedisCacheStats): backend, hits, misses, fallbacks."""
        async with tool_call(self._c, context):
            return json.dumps(self._c.services.cache.stats(), default=str)

    @function_tool
    async def get_database_batch_stats(self, context: RunContext[Any]) -> str:
        """Write batcher health (getDatabaseBatchStats): queued, written, retries, spooled."""
        async with tool_call(self._c, context):
            return json.dumps(self._c.services.batcher.stats(), default=str)

    @function_tool
    async def get_memory_stats(self, context: RunContext[Any]) -> str:
        """Memory health (getMemoryStats): this user's memories, retrieval, turn timings, and
        the injection screening and rate limits that guard them."""
        services = self._c.services
        async with tool_call(self._c, context) as user:
            stats = await services.rag.memory_stats(user.user_id, user.companion_id)
        return json.dumps({
            **stats, "embedder": services.embedder.stats(), "turn_ms": self._c.turn_ms.summary(),
            "session": self._c.stats(), "security": services.security.stats(),
            "limits": services.limits.stats(),
        }, default=str)


# Imported once in LiveKit's forkserver (Linux) and inherited by every job process, which then
# starts with this module's imports in place instead of paying for them inside its 10 s
# initialize_process_timeout. The forkserver resolves "agent" against its working directory
# (Python 3.11's forkserver ignores sys.path): start the worker from the project root, as the
# README does; elsewhere each job process imports the modules itself, only slower.
# httpcore: httpx imports it only when a job opens its first client (~70 ms under load). The
# rest the SDKs a session talks through import lazily, on first use: httpcore's anyio backend,
# the OpenAI client's chat, audio and model resources and its stream parser, and the
# framework's tool machinery; bench/capacity.py saw every job import them on its event loop
# during the greeting and first turn (0.1-0.5 s each under load). pgserver: a job that joins
# the embedded Postgres imports it first (~100 ms).
PRELOADED_MODULES = [
    "agent", "onnxruntime", "tokenizers",
    "httpcore", "anyio._backends._asyncio", "anyio.streams.stapled", "anyio.streams.memory",
    "openai.resources.chat.chat", "openai.resources.audio.audio", "openai.resources.models",
    "numpy.ma", "livekit.agents.llm.async_toolset", "pgserver.postgres_server",
]

server = CompanionServer(setup_fnc=prewarm, preload_modules=PRELOADED_MODULES)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    settings = ctx.proc.userdata["settings"]
    participant = await ctx.wait_for_participant()
    try:
        user_id = resolve_identity(
            participant.identity, console=ctx.is_fake_job(), dev_mode=utils.is_dev_mode(),
            dev_user_id=settings.dev_user_id,
        )
    except InvalidIdentity as err:
        # Nothing has been written for this participant; say why and leave the room.
        logger.error("participant refused: identity is not a user id", extra={"error": str(err)})
        ctx.shutdown(reason=f"invalid identity: {err}")
        return
    ctx.log_context_fields = {**ctx.log_context_fields, "user_id": str(user_id)}
    try:
        services = await build_services(
            settings, local_embedder=ctx.proc.userdata.get("embedder"),
            tls=ctx.proc.userdata.get("tls"),
        )
    except CompanionError as err:
        # The database is unreachable or its schema behind: say what to do and leave the room.
        logger.error("the job cannot start: %s", err)
        ctx.shutdown(reason=f"cannot start: {err.message}")
        return
    companion: CompanionSession | None = None
    session: AgentSession[SessionUser] | None = None
    voices: SessionVoices | None = None

    async def end_of_job() -> None:
        await end_job(services, opened=companion, session=session, voices=voices)

    ctx.add_shutdown_callback(end_of_job)
    companion = await open_session(
        services, user_id=user_id, room=ctx.room.name,
        onboarding=OnboardingData.from_participant(participant.metadata, participant.attributes),
    )
    log_fields_for(companion)
    session = build_session(companion, ctx.proc.userdata["vad"])
    voices = SessionVoices(session)  # livekit closes no TTS itself
    companion.attach(session)
    # The participant left or the session failed: end the job, which ends the conversation.
    session.on("close", lambda _: ctx.shutdown(reason="session closed"))
    await session.start(agent=CompanionAgent(companion), room=ctx.room, room_options=room_options())


def main() -> None:
    prepare_cli(sys.argv, server)
    cli.run_app(server)


if __name__ == "__main__":
    main()
