"""Before the LiveKit CLI runs: settings parsed and checked, with one clear message instead of
a traceback, the values the CLI reads from the process environment put there, and (for the
commands that run jobs) the database opened and migrated once for the whole worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from core.config import Settings, load_settings
from core.errors import CompanionError, ConfigError
from livekit_layer.worker_server import CompanionServer

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


def prepare_cli(argv: Sequence[str], server: CompanionServer) -> None:
    """Check what the command in `argv` needs; exit with code 2 and a message if it is missing.

    For a command that runs jobs the database is opened and migrated here, once for the
    worker (`server.prepare`), before any job can start.

    The LiveKit CLI reads only the process environment, so .env values are copied there
    (`livekit_environment`); what is set there already wins.
    """
    command = next((a for a in argv[1:] if not a.startswith("-")), "")
    try:
        settings = load_settings()
    except ConfigError as err:
        stop(str(err))
    if command in NEEDS_LLM and not settings.has_llm_credentials:
        stop(MISSING_LLM)
    for name, value in livekit_environment(settings).items():
        os.environ.setdefault(name, value)
    if command in NEEDS_SERVER and "--url" not in argv and not os.environ.get("LIVEKIT_URL"):
        stop(MISSING_SERVER)
    if command in NEEDS_LLM and not {"-h", "--help"} & set(argv):
        try:
            server.prepare(settings)
        except CompanionError as err:
            stop(f"the database is not ready: {err}")


def livekit_environment(settings: Settings) -> dict[str, str]:
    """What the LiveKit CLI, its worker and its job processes (which inherit the environment)
    read from the process environment, from the settings.

    LOG_LEVEL becomes the CLI's default `--log-level`: the CLI sets the root logger, so ours
    too (LiveKit spells WARNING as WARN). LOOP_BLOCK_WARN_MS is the job loop monitor's
    threshold: at LiveKit's 100 ms it wakes the loop and a watchdog thread every 20 ms, about
    1% of a core per job (bench/RESULTS.md); at 250 ms every 50 ms, half that, and blocks
    shorter than 250 ms go unreported.
    """
    env = {
        "LIVEKIT_LOG_LEVEL": settings.log_level.replace("WARNING", "WARN"),
        "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS": str(settings.loop_block_warn_ms),
    }
    if settings.livekit_url:
        env["LIVEKIT_URL"] = settings.livekit_url
    for name, secret in (("LIVEKIT_API_KEY", settings.livekit_api_key),
                         ("LIVEKIT_API_SECRET", settings.livekit_api_secret)):
        if secret is not None:
            env[name] = secret.get_secret_value()
    return env


def stop(message: str) -> NoReturn:
    print(f"companion: {message}", file=sys.stderr)
    sys.exit(2)
