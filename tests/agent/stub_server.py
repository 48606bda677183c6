"""Serve the OpenAI stub on a fixed port, to run `python agent.py console` with no real API.

    .venv/bin/python -m tests.agent.stub_server --port 8765 &
    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 .venv/bin/python agent.py console --text

It echoes what you type, saves a memory when a line says "remember", writes session summaries
that quote what you said, and greets with the summary it finds in the greeting instructions,
so a second run is visibly greeted with what was said in the first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import Any

from aiohttp import web

from tests.support.openai_server import OpenAIStubServer

SUMMARY_MARK = "notes a caring friend keeps"


def _user_lines(transcript: str) -> list[str]:
    return [line[len("User: "):] for line in transcript.splitlines() if line.startswith("User: ")]


def companion_brain(body: dict[str, Any]) -> Any:
    messages = body.get("messages") or []
    system = " ".join(
        m.get("content") or "" for m in messages
        if m.get("role") in ("system", "developer") and isinstance(m.get("content"), str)
    )
    if SUMMARY_MARK in system:
        said = _user_lines(messages[-1].get("content") or "")
        return {"json": {"summary": "They told you: " + " / ".join(said)[:400], "follow_ups": []}}
    if body.get("response_format"):
        return {"json": {"memories": []}}
    if not body.get("stream"):
        return "A person the companion is getting to know."
    # The companion's memory note is a system message after the user's turn: skip it.
    spoken = [m for m in messages if m.get("role") not in ("system", "developer")]
    last = spoken[-1] if spoken else {}
    if last.get("role") == "tool":
        return "I'll remember that."
    if last.get("role") != "user":
        # A greeting or nudge: say back what the instructions told the companion to build on.
        noted = re.search(r"Last time you talked about: (.+)", system)
        if noted:
            return f"Welcome back! Last time you told me: {noted.group(1)[:300]}"
        return "Hello! It's good to hear from you."
    content = last.get("content")
    text = content if isinstance(content, str) else ""
    if re.search(r"\bremember\b", text, re.IGNORECASE):
        return {"tool": "remember", "args": {"category": "FACT", "key": "note", "value": text}}
    return f"You said: {text}"


async def serve(port: int) -> None:
    server = OpenAIStubServer(chat_script=companion_brain)
    await server.start()
    # start() listens on a free port; a fixed one is easier to put in OPENAI_BASE_URL.
    assert server._runner is not None
    await web.TCPSite(server._runner, "127.0.0.1", port).start()
    print(json.dumps({"base_url": f"http://127.0.0.1:{port}/v1"}), flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
