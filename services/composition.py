"""The job's shared resources and services, built once by `build_services`.

Nothing else constructs services. `Services.aclose()` finishes background work, drains the
batcher and closes in the reverse order of construction.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from core.config import EmbeddingProvider, Settings
from core.deadline import Deadline, wait_until, within
from core.forgotten import ForgottenMemories
from infrastructure import migrations
from infrastructure.connection_pool import ConnectionPool
from infrastructure.database import Database
from infrastructure.database_batcher import DatabaseBatcher
from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.embeddings import Embedder, check_dimension
from infrastructure.local_embedder import LocalEmbedder
from infrastructure.minilm_onnx import DIMENSIONS as LOCAL_DIMENSIONS
from infrastructure.minilm_onnx import MODEL_NAME as LOCAL_MODEL_NAME
from infrastructure.model_clients import ModelClients
from infrastructure.openai_embedder import DEFAULT_OPENAI_MODEL, OpenAIEmbedder
from infrastructure.redis_cache import RedisCache
from rag_system.engine import RetrievalEngine
from services.memory.after_session import AfterSession
from services.memory.consolidation_service import ConsolidationService
from services.memory.derived_text import SPOOLED_KIND as FORGET_PROFILES_KIND
from services.memory.episodic_log import EPISODE_KIND
from services.memory.forgetting import OLDER_KINDS as OLDER_FORGET_KINDS
from services.memory.forgetting import WRITE_KINDS as FORGET_KINDS
from services.memory.memory_maintenance import MemoryMaintenance
from services.memory.memory_service import MemoryService
from services.memory.memory_upkeep import MemoryUpkeep
from services.memory.profile_service import ProfileService
from services.memory.rag_service import RAGService
from services.people.companion_service import CompanionService
from services.people.conversation_service import OLDER_KINDS as OLDER_CONVERSATION_KINDS
from services.people.conversation_service import WRITE_KINDS as CONVERSATION_KINDS
from services.people.conversation_service import ConversationService
from services.people.follow_up_service import RAISED_KIND, FollowUpService
from services.people.onboarding_service import OnboardingService
from services.people.person_data import PersonData
from services.people.user_service import UserService
from services.persona.personality_service import WRITE_KINDS as PERSONALITY_KINDS
from services.persona.personality_service import PersonalityService
from services.persona.proactive_service import ProactiveService
from services.safety.rate_limiter import RateLimiter
from services.safety.security_service import INCIDENT_KIND, SecurityService

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """Every shared resource and service of one job, built by `build_services`."""

    settings: Settings
    pool: ConnectionPool
    models: ModelClients
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
    follow_ups: FollowUpService
    conversations: ConversationService
    onboarding: OnboardingService
    profiles: ProfileService
    consolidation: ConsolidationService
    after_session: AfterSession
    maintenance: MemoryMaintenance
    security: SecurityService
    limits: RateLimiter
    forgotten: ForgottenMemories
    person_data: PersonData
    owns_embedder: bool = True
    embedded_postgres: EmbeddedPostgres | None = None
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

    def finish_by(self, deadline: Deadline) -> Deadline:
        """The job ends at `deadline`: the batcher and the pool learn it (every database wait
        from now on ends in time, and what is not written is spooled). Returns when the work
        that queues writes (session close, summaries) must end: `batcher.spool_reserve_s`
        before it, so that its writes are spooled too."""
        self.batcher.finish_by(deadline)
        work = deadline.earlier(self.batcher.spool_reserve_s)
        self.pool.finish_by(work)
        return work

    async def aclose(self, deadline: Deadline | None = None) -> None:
        """Finish background work, drain the batcher, then close in reverse order.

        With `deadline` (the job's end, see `livekit_layer.job.end_job`), background work gets
        until `batcher.spool_reserve_s` before it and is cancelled then (a turn still being
        embedded is kept without its vector); the batcher writes until then and spools the
        rest; nothing waits on the database past the deadline.
        """
        if self.closed:
            return
        self.closed = True
        started = time.perf_counter()
        work = self.finish_by(deadline) if deadline is not None else None
        # Sessions closing in the background still write through every service below.
        while self.background:
            if not await wait_until(work, list(self.background)):
                for task in self.background:
                    task.cancel()
                logger.warning("background work cancelled at the shutdown deadline")
                await asyncio.wait(list(self.background))
        embedded = self.embedded_postgres
        # Services first: their background tasks still write through the batcher and pool.
        # Those given `work` stop by it themselves; the others are cut off at it.
        closers: tuple[tuple[str, Callable[[], Awaitable[None]] | None, bool], ...] = (
            ("conversations", partial(self.conversations.aclose, work), False),
            # The person's words first: turns being embedded reach the queue before the
            # derived work (profiles, consolidation) may use up what is left of `work`.
            ("memory", partial(self.memory.aclose, work), False),
            ("consolidation", self.consolidation.aclose, True),
            ("rag", self.rag.aclose, True),
            ("personality", self.personality.aclose, True),
            ("batcher", partial(self.batcher.aclose, deadline), False),
            ("embedder", self.embedder.aclose if self.owns_embedder else None, False),
            ("cache", self.cache.aclose, False),
            ("pool", partial(self.pool.aclose, deadline), False),
            ("models", self.models.aclose, False),
            ("embedded postgres", embedded.aclose if embedded is not None else None, False),
        )
        for name, closer, bounded in closers:
            if closer is None:
                continue
            logger.debug("closing %s", name)
            try:
                async with within(work if bounded else None):
                    await closer()
            except TimeoutError:
                logger.warning("closing %s ran out of time at the shutdown deadline", name)
            except Exception as exc:
                # Keep closing the rest: a failed drain must not leave the pool open.
                logger.warning("closing %s failed (%s)", name, type(exc).__name__)
        logger.info("services closed (ms=%.0f)", (time.perf_counter() - started) * 1000)


async def _quietly(work: Coroutine[Any, Any, Any], what: str) -> None:
    try:
        await work
    except Exception as exc:
        logger.warning("%s failed (%s)", what, type(exc).__name__)


def register_write_kinds(batcher: DatabaseBatcher) -> None:
    """Every kind of write the services send through the batcher (each service registers its
    own as well): registered before `start`, so that the replay of the spool knows them all."""
    batcher.register(EPISODE_KIND)
    for kind in FORGET_KINDS:
        batcher.register(kind, older=OLDER_FORGET_KINDS[kind.op])
    for kind in CONVERSATION_KINDS:
        batcher.register(kind, older=OLDER_CONVERSATION_KINDS.get(kind.op, ()))
    batcher.register(FORGET_PROFILES_KIND)
    batcher.register(RAISED_KIND)
    batcher.register(INCIDENT_KIND)
    for kind in PERSONALITY_KINDS:
        batcher.register(kind)


def build_embedder(
    settings: Settings, models: ModelClients, *, local: LocalEmbedder | None = None
) -> Embedder:
    """The embedder `settings` asks for; `local` is the one loaded in prewarm, if any."""
    if settings.embedding_provider is EmbeddingProvider.OPENAI:
        # The default EMBEDDING_MODEL names the local model, which no OpenAI server has.
        model = (
            DEFAULT_OPENAI_MODEL
            if settings.embedding_model == LOCAL_MODEL_NAME
            else settings.embedding_model
        )
        logger.info(
            "embeddings: OpenAI-compatible server, model %s, %s dimensions "
            "(EMBEDDING_PROVIDER=openai)",
            model,
            settings.embedding_dimensions,
        )
        return OpenAIEmbedder(
            client=models.openai, model=model, dimensions=settings.embedding_dimensions
        )
    logger.info(
        "embeddings: local %s, %s dimensions (EMBEDDING_PROVIDER=local, prewarmed=%s)",
        LOCAL_MODEL_NAME,
        LOCAL_DIMENSIONS,
        local is not None,
    )
    return local if local is not None else LocalEmbedder.load()


async def build_services(
    settings: Settings,
    *,
    local_embedder: LocalEmbedder | None = None,
    tls: ssl.SSLContext | None = None,
) -> Services:
    """Open the database, model clients, cache, embedder and batcher; build every service.

    The database is DATABASE_URL's, or the embedded Postgres when it is unset (joined: the
    worker started it). Nothing is migrated here: the worker applied the migrations at its
    start (`infrastructure.database.open_migrated`); a job only checks, by one read of the
    ledger, that none is pending, and raises `SchemaBehind` saying to run
    `python manage.py migrate` if one is.

    Args:
        settings: parsed settings.
        local_embedder: the model prewarm loaded (EMBEDDING_PROVIDER=local); owned by the
            caller, so it is not closed with the services.
        tls: the TLS context prewarm built (`model_clients.tls_context()`); built here if None.
    """
    opened: list[Any] = []
    try:
        database = await Database.open(settings)
        opened.append(database)
        embedded = database.embedded
        pool = await ConnectionPool.create(
            settings, dsn=database.dsn, embedded=embedded is not None
        )
        opened.append(pool)
        # Migrations are the worker's (at its start) or `manage.py migrate`'s, never a job's.
        await migrations.require_current(pool)
        models = ModelClients.create(settings, tls=tls)
        opened.append(models)
        cache = await RedisCache.create(settings)
        opened.append(cache)
        embedder = build_embedder(settings, models, local=local_embedder)
        if embedder is not local_embedder:
            opened.append(embedder)
        await check_dimension(pool, embedder)
        batcher = DatabaseBatcher(pool=pool, settings=settings)
        register_write_kinds(batcher)
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
    # One set of notes for every copy of memories this process holds.
    forgotten = ForgottenMemories()
    memory = MemoryService(
        pool=pool, cache=cache, batcher=batcher, embedder=embedder, settings=settings,
        forgotten=forgotten,
    )
    retrieval = RetrievalEngine(
        pool=pool, embedder=embedder, settings=settings, forgotten=forgotten
    )
    rag = RAGService(engine=retrieval, memory=memory, settings=settings)
    personality = PersonalityService(pool=pool, cache=cache, batcher=batcher, settings=settings)
    follow_ups = FollowUpService(pool=pool, batcher=batcher)
    proactive = ProactiveService(follow_ups=follow_ups, personality=personality, settings=settings)
    conversations = ConversationService(
        pool=pool, models=models, cache=cache, batcher=batcher, follow_ups=follow_ups,
        settings=settings,
    )
    onboarding = OnboardingService(users=users, companions=companions)
    profiles = ProfileService(
        pool=pool, models=models, users=users, memory=memory, settings=settings
    )
    consolidation = ConsolidationService(
        pool=pool, models=models, memory=memory, settings=settings
    )
    after_session = AfterSession(consolidation=consolidation, profiles=profiles)
    maintenance = MemoryMaintenance(
        pool=pool, consolidation=consolidation, profiles=profiles,
        upkeep=MemoryUpkeep(pool=pool, memory=memory, settings=settings), memory=memory,
    )
    security = SecurityService(batcher=batcher, settings=settings)
    limits = RateLimiter(cache=cache, settings=settings)
    person_data = PersonData(
        pool=pool, cache=cache, memory=memory, users=users, conversations=conversations,
        personality=personality,
    )
    return Services(
        settings=settings, pool=pool, models=models, cache=cache, embedder=embedder,
        batcher=batcher, users=users, companions=companions, memory=memory,
        retrieval=retrieval, rag=rag, personality=personality, proactive=proactive,
        follow_ups=follow_ups, conversations=conversations, onboarding=onboarding,
        profiles=profiles, consolidation=consolidation, after_session=after_session,
        maintenance=maintenance, security=security, limits=limits, forgotten=forgotten,
        person_data=person_data, owns_embedder=embedder is not local_embedder,
        embedded_postgres=embedded,
    )
