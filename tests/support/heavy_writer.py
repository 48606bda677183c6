"""A companion job that writes as fast as it can until SIGTERM, then shuts down as the agent does.

    python -m tests.support.heavy_writer --dsn postgresql://... --spool DIR [--deadline-s 10]

It builds the real services (`build_services`) over the given database, opens one session and
logs turns through `CompanionSession.log_message` (messages and episodic memories through the
batcher). On SIGTERM it stops writing and runs what the agent's job shutdown callback runs,
`livekit_layer.job.end_job`, under the deadline LiveKit gives a job
process (`shutdown_process_timeout`, 10 s) before it kills it; past the deadline it exits at
once with code 3, as the kill would, without any further cleanup.

The embeddings and the summary LLM are a loopback OpenAI stub inside this process. stdout gets
JSON lines: {"event": "writing", ...} once `--signal-after` messages are logged, and a final
{"event": "done", ...} with what was logged and the batcher's stats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import uuid
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


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with OpenAIStubServer(chat_script=marker_brain) as stub:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            database_url=args.dsn,
            batch_spool_dir=Path(args.spool),
            embedded_pg_dir=Path(args.spool) / "unused-pg",
            redis_enabled=False,
            openai_base_url=stub.base_url,
            openai_api_key="test-key",
            openai_max_retries=2,
            openai_timeout_s=args.openai_timeout_s,
            llm_model="stub-model",
            embedding_provider="openai",
            embedding_model="text-embedding-3-small",
            embedding_dimensions=384,
            consolidation_every_turns=0,
        )
        if args.llm_hang_s:
            stub.hang_next(10**6, seconds=args.llm_hang_s, path_prefix="/v1/chat/completions")
        services = await build_services(settings)
        companion = await open_session(services, user_id=uuid.UUID(args.user_id), room="drain")
        emit("open", session_id=companion.conversation.id, user_id=args.user_id)
        messages = 0
        signalled = False

        async def pending_embeddings() -> int:
            return int((await services.memory.stats())["pending_tasks"])

        while not stop.is_set() and messages < args.max_messages:
            for _ in range(BURST):
                role = "user" if messages % 2 == 0 else "assistant"
                companion.log_message(role, f"heavy {role} turn {messages} about the garden")
                messages += 1
            if messages >= args.signal_after and not signalled:
                signalled = True
                emit("writing", messages=messages, batcher=services.batcher.stats())
            while not stop.is_set() and await pending_embeddings() > MAX_PENDING_EMBEDDINGS:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0)
        queued = services.batcher.stats()["queue_depth"]
        pending = await pending_embeddings()
        started = time.monotonic()

        try:
            # What agent.py's shutdown callback runs (no AgentSession here: one companion).
            await asyncio.wait_for(
                end_job(services, opened=companion, session=None), timeout=args.deadline_s
            )
        except TimeoutError:
            emit("killed", messages=messages, batcher=services.batcher.stats())
            os._exit(3)  # what LiveKit's kill after shutdown_process_timeout leaves: nothing
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
    parser.add_argument("--deadline-s", type=float, default=10.0)
    parser.add_argument("--llm-hang-s", type=float, default=0.0,
                        help="the chat endpoint holds every request this long")
    parser.add_argument("--openai-timeout-s", type=float, default=15.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
