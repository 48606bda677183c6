"""A companion job that writes as fast as it can until SIGTERM, then shuts down as the agent does.

    python -m tests.support.heavy_writer --dsn postgresql://... --spool DIR [--hold-llm]

It builds the real services (`build_services`) over the given database, opens one session and
logs turns through `CompanionSession.log_message` (messages and episodic memories through the
batcher). On SIGTERM it logs one last burst, which is still queued or being embedded when the
shutdown starts, and runs what the agent's job shutdown callback runs,
`livekit_layer.job.end_job`. LiveKit's deadline for that (`shutdown_process_timeout`) is the
parent's to enforce, with a real SIGKILL; how long the drain takes is measured in
bench/shutdown_drain.py, not here.

The embeddings and the summary LLM are a loopback OpenAI stub inside this process; with
`--hold-llm` it holds every chat request until the process ends. stdout gets JSON lines:
    {"event": "open"}          the session is open
    {"event": "writing"}       `--signal-after` messages are logged: send SIGTERM now
    {"event": "flush_failed"}  a batcher flush failed (the database is away), once
    {"event": "held"}          (--hold-llm) after SIGTERM, a chat call is held at the stub and
                               every write logged so far is in Postgres
    {"event": "done"}          the shutdown finished: what was logged, the batcher's stats
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from core.config import Settings
from livekit_layer.job import end_job
from livekit_layer.session_open import open_session
from services.composition import build_services
from tests.support.markers import marker_brain
from tests.support.openai_server import OpenAIStubServer

BURST = 20
# Keep the background embeddings of logged turns from piling up without bound: a job this busy
# would be spread over more workers.
MAX_PENDING_EMBEDDINGS = 400
CHAT = "/v1/chat/completions"
# Longer than any test runs: a held chat call is answered only if the process outlives it.
HELD_FOR_S = 3_600.0
POLL_S = 0.01


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    """Poll counters of other components, which have no event to wait on."""
    while True:
        if await condition():
            return
        await asyncio.sleep(POLL_S)


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with OpenAIStubServer(chat_script=marker_brain) as stub:
        settings = Settings(
            _env_file=None,
            database_url=args.dsn,
            batch_spool_dir=Path(args.spool),
            embedded_pg_dir=Path(args.spool) / "unused-pg",
            redis_enabled=False,
            openai_base_url=stub.base_url,
            openai_api_key="test-key",
            openai_max_retries=2,
            # Held chat calls stay held until the parent kills this process.
            openai_timeout_s=HELD_FOR_S if args.hold_llm else 15.0,
            llm_model="stub-model",
            embedding_provider="openai",
            embedding_model="text-embedding-3-small",
            embedding_dimensions=384,
            consolidation_every_turns=0,
        )
        if args.hold_llm:
            stub.hang_next(10**6, seconds=HELD_FOR_S, path_prefix=CHAT)
        services = await build_services(settings)
        companion = await open_session(services, user_id=uuid.UUID(args.user_id), room="drain")
        emit("open", session_id=companion.conversation.id, user_id=args.user_id)
        messages = 0

        def log_burst() -> None:
            nonlocal messages
            for _ in range(BURST):
                role = "user" if messages % 2 == 0 else "assistant"
                companion.log_message(role, f"heavy {role} turn {messages} about the garden")
                messages += 1

        async def pending_embeddings() -> int:
            return int((await services.memory.stats())["pending_tasks"])

        async def all_written_and_llm_held() -> bool:
            batcher = services.batcher.stats()
            held = any(r.status is None for r in stub.requests_to(CHAT))
            return (held and batcher["items_written"] == batcher["items_enqueued"]
                    and batcher["queue_depth"] == 0 and batcher["overflow_depth"] == 0
                    and await pending_embeddings() == 0)

        reported = set()
        while not stop.is_set() and messages < args.max_messages:
            log_burst()
            if messages >= args.signal_after and "writing" not in reported:
                reported.add("writing")
                emit("writing", messages=messages, batcher=services.batcher.stats())
            batcher = services.batcher.stats()
            # A failed flush is retried, or spooled at once while the batcher knows the
            # database is away.
            failed = batcher["retries"] + batcher["failures"] > 0
            if failed and "flush_failed" not in reported:
                reported.add("flush_failed")
                emit("flush_failed", messages=messages, batcher=services.batcher.stats())
            if await pending_embeddings() > MAX_PENDING_EMBEDDINGS:
                await services.memory.drain()
            await asyncio.sleep(0)
        # SIGTERM lands while turns are being logged: the last burst is still queued or being
        # embedded when the shutdown starts (no await in between).
        log_burst()
        queued = services.batcher.stats()["queue_depth"]
        pending = await pending_embeddings()
        started = time.monotonic()
        # What agent.py's shutdown callback runs (no AgentSession here: one companion).
        ending = asyncio.create_task(end_job(services, opened=companion, session=None))
        if args.hold_llm:
            await until(all_written_and_llm_held)
            emit("held", messages=messages, batcher=services.batcher.stats())
        await ending
        emit(
            "done", messages=messages, queued_at_signal=queued, pending_embeddings=pending,
            drain_s=round(time.monotonic() - started, 3), batcher=services.batcher.stats(),
            session_id=companion.conversation.id,
        )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--user-id", default=str(uuid.uuid4()))
    parser.add_argument("--signal-after", type=int, default=2_000)
    parser.add_argument("--max-messages", type=int, default=200_000)
    parser.add_argument("--hold-llm", action="store_true",
                        help="the chat endpoint holds every request until the process ends")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
