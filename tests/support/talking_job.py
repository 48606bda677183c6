"""A companion job that has a short conversation, then waits for SIGTERM and ends the way a
LiveKit job process does.

    python -m tests.support.talking_job --dsn postgresql://... --spool DIR \
        --openai-url http://127.0.0.1:PORT/v1 --user-id UUID --say "..." [--say "..."]

It builds the real services (`build_services`) over the given database with the product's
LLM client settings, opens a session (`open_session`) and runs the real `CompanionAgent` in an
`AgentSession` (typed turns, no room: nothing is heard or spoken) against the OpenAI-compatible
server at `--openai-url`. That server runs in a process of its own (`openai_process`), which
the parent may kill or freeze while the job ends. On SIGTERM it does what LiveKit's job
process does: the AgentSession closes, then the shutdown callback runs `end_job`. LiveKit's
deadline for that is the parent's to enforce, with a real SIGKILL.

stdout gets JSON lines:
    {"event": "talked"}   every turn was answered and is written: send SIGTERM now;
                          `messages` is what the session logged, [[role, text], ...]
    {"event": "done"}     `end_job` returned; `after_session` is its counters
Exit code 0 when the job ended by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

from livekit.agents import AgentSession

from agent import CompanionAgent
from core.config import Settings
from livekit_layer.job import end_job
from livekit_layer.session_models import build_llm, connect_options
from livekit_layer.session_open import open_session
from services.composition import build_services


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    settings = Settings(
        _env_file=None,
        database_url=args.dsn,
        batch_spool_dir=Path(args.spool),
        embedded_pg_dir=Path(args.spool) / "unused-pg",
        redis_enabled=False,
        openai_base_url=args.openai_url,
        openai_api_key="test-key",
        llm_model="stub-model",
        embedding_provider="openai",
        embedding_model="text-embedding-3-small",
        embedding_dimensions=384,
        # The session's end consolidates it (and the test sees what that left).
        consolidation_every_turns=0,
    )
    services = await build_services(settings)
    companion = await open_session(services, user_id=uuid.UUID(args.user_id), room="talk")
    session: AgentSession[Any] = AgentSession(
        llm=build_llm(services), userdata=companion.user,
        conn_options=connect_options(settings),
    )
    companion.attach(session, nudges=False)
    greeting = await session.start(CompanionAgent(companion), capture_run=True)
    await greeting
    for text in args.say:
        await session.run(user_input=text)
    # What the turns logged is written before the job is asked to stop.
    await services.memory.drain()
    await services.batcher.flush()
    emit("talked", session_id=companion.conversation.id,
         messages=[[t.role, t.text] for t in companion.conversation.turns])
    await stop.wait()
    # LiveKit closes the job's AgentSession, then runs the shutdown callbacks.
    await session.aclose()
    await end_job(services, opened=companion, session=session)
    emit("done", after_session=services.after_session.stats())
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--spool", required=True)
    parser.add_argument("--openai-url", required=True)
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--say", action="append", required=True, help="one typed turn")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
