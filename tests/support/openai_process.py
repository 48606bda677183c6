"""The loopback OpenAI server in a process of its own, so that a test can kill it (SIGKILL) or
hang it (SIGSTOP) the way a model server dies or stalls under the job talking to it.

    python -m tests.support.openai_process [--port N] [--hold KIND]

It answers as `markers.marker_brain` does (memories and profiles carry the marker tokens they
were given). stdout gets JSON lines:
    {"event": "listening", "base_url": ...}          it accepts requests
    {"event": "request", "kind": ..., "held": ...}   a request arrived; kind is one of KINDS
With `--hold KIND`, the first request of that kind is held unanswered until the process ends:
the moment the parent picks to kill or freeze it. `--port` serves on a given port (a server
back after a crash, at the address its clients were given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from typing import Any

from tests.support.markers import (
    CONSOLIDATION_MARK,
    PROFILE_MARK,
    SUMMARY_MARK,
    marker_brain,
)
from tests.support.openai_server import OpenAIStubServer, RecordedRequest

CHAT = "/v1/chat/completions"
# The chat calls a companion makes, told apart by their system prompts; then the rest.
BACKGROUND_MARKS = {
    "summary": SUMMARY_MARK, "consolidation": CONSOLIDATION_MARK, "profile": PROFILE_MARK,
}
KINDS = (*BACKGROUND_MARKS, "conversation", "embeddings", "other")
# Longer than any test runs: a held request is answered only if the process outlives it.
HELD_FOR_S = 3_600.0


def kind_of(body: Any, path: str = CHAT) -> str:
    """Which of KINDS a request is."""
    if path.endswith("/embeddings"):
        return "embeddings"
    if not path.endswith("/chat/completions"):
        return "other"
    system = "\n".join(
        m.get("content") or "" for m in (body or {}).get("messages") or []
        if m.get("role") in ("system", "developer") and isinstance(m.get("content"), str)
    )
    for kind, mark in BACKGROUND_MARKS.items():
        if mark in system:
            return kind
    return "conversation"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def report_arrivals(server: OpenAIStubServer, hold: str | None) -> None:
    held = False
    seen = 0
    while True:
        arrived: list[RecordedRequest] = await server.received("/", seen + 1)
        for request in arrived[seen:]:
            kind = kind_of(request.json, request.path)
            is_held = kind == hold and not held
            held = held or is_held
            emit("request", kind=kind, held=is_held)
        seen = len(arrived)


async def serve(port: int, hold: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    server = OpenAIStubServer(chat_script=marker_brain)
    if hold is not None:
        server.hang_next(1, seconds=HELD_FOR_S, path_prefix=CHAT,
                         when=lambda body: kind_of(body) == hold)
    await server.start(port=port)
    emit("listening", base_url=server.base_url)
    reporting = asyncio.create_task(report_arrivals(server, hold))
    try:
        await stop.wait()
    finally:
        reporting.cancel()
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--hold", choices=KINDS)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.hold))


if __name__ == "__main__":
    main()
