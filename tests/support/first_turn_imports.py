"""What a job process imports during a session's first turns, on its event loop.

Run in a fresh interpreter (`python -m tests.support.first_turn_imports`): it imports what
LiveKit's forkserver imports for the companion (the plugins, `agent.PRELOADED_MODULES`,
LiveKit's own warm-up), then does through the SDKs what a session's first turns do (one
streamed chat, one transcription and one speech request, over the job's model clients, to the
loopback OpenAI server) and prints, as JSON, the modules imported meanwhile.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys

from livekit.agents import Plugin

import agent

for name in dict.fromkeys(
    [p.package for p in Plugin.registered_plugins] + agent.PRELOADED_MODULES
    + ["livekit.agents.ipc._preload"]
):
    importlib.import_module(name)

from livekit import rtc  # noqa: E402
from livekit.agents import llm  # noqa: E402
from livekit.plugins import openai as lk_openai  # noqa: E402

from core.config import Settings  # noqa: E402
from infrastructure.model_clients import ModelClients  # noqa: E402
from tests.support.openai_server import OpenAIStubServer  # noqa: E402
from uplift_tts import build_tts  # noqa: E402


async def first_turns() -> list[str]:
    async with OpenAIStubServer(chat_script=lambda body: "Hello there.") as stub:
        before = set(sys.modules)
        settings = Settings(
            _env_file=None, openai_base_url=stub.base_url, openai_api_key="key",
            llm_model="stub-model", tts_provider="openai",
        )
        clients = ModelClients.create(settings)
        chat = lk_openai.LLM(model="stub-model", client=clients.openai.with_options(max_retries=0))
        context = llm.ChatContext()
        context.add_message(role="user", content="hi")
        async with chat.chat(chat_ctx=context) as stream:
            async for _ in stream:
                pass
        ear = lk_openai.STT(model=settings.stt_model, client=clients.openai, language="en")
        await ear.recognize(buffer=[rtc.AudioFrame(bytes(3200), 16000, 1, 1600)])
        voice = build_tts(settings, http_session=clients.http)
        async with voice.synthesize("Hello there.") as spoken:
            async for _ in spoken:
                pass
        await voice.aclose()
        await clients.aclose()
        return sorted(set(sys.modules) - before)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(first_turns())))
