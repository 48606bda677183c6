"""The loopback OpenAI server of bench/capacity.py, in its own process, shared by every job.

    python -m bench.capacity_stub DIR     DIR: where render_utterances wrote the speech

It hears the run's utterances (the transcription endpoint answers a WAV holding one of them
with its text, and refuses any other audio), answers the chat as `scripted_reply` does, and
speaks every reply with espeak-ng (rendered once at start: its time is the server's, not the
product's). A second loopback port serves `GET /take`: the requests since the last take, each
with its job (the API key each job is given) and the server's own time, then forgets them.
Prints one JSON line with both URLs once it listens.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.capacity_script import REPLIES, load_utterances, scripted_reply
from tests.support.openai_audio import SPEECH_SAMPLE_RATE
from tests.support.openai_server import OpenAIStubServer, RecordedRequest
from tests.support.speech import speak

# The VAD's padding before speech (0.5 s) and silence after it (0.55 s), plus some inference
# windows: how much longer than the utterance's sound the audio cut from the microphone is.
VAD_EXTRA_S = 1.35


class SpokenVoice:
    """espeak-ng at OpenAI's rate, each text rendered once."""

    def __init__(self) -> None:
        self._pcm: dict[str, bytes] = {}

    async def prepare(self, texts: tuple[str, ...]) -> None:
        for text in texts:
            await self(text)

    async def __call__(self, text: str) -> bytes:
        if text not in self._pcm:
            self._pcm[text] = (await speak(text, sample_rate=SPEECH_SAMPLE_RATE)).pcm
        return self._pcm[text]


def request_row(request: RecordedRequest) -> dict[str, Any]:
    """What the benchmark needs of a request: whose, what, and when the server worked on it."""
    auth = request.authorization or ""
    return {
        "job": auth.removeprefix("Bearer "),
        "path": request.path,
        "stream": bool((request.json or {}).get("stream")),
        "status": request.status,
        "received_at": request.received_at,
        "first_byte_at": request.first_byte_at,
        "answered_at": request.answered_at,
    }


async def serve(speech_dir: Path) -> None:
    server = OpenAIStubServer(chat_script=scripted_reply)
    voice = SpokenVoice()
    await voice.prepare(REPLIES)
    server.speech.voice = voice
    server.transcriptions.register(*load_utterances(speech_dir))
    server.transcriptions.max_extra_s = VAD_EXTRA_S
    await server.start()

    async def take(request: web.Request) -> web.Response:
        done = [r for r in server.requests if r.answered_at is not None]
        server.requests[:] = [r for r in server.requests if r.answered_at is None]
        refused = sum(1 for h in server.transcriptions.heard if h.text is None)
        server.transcriptions.heard.clear()
        return web.json_response(
            {"requests": [request_row(r) for r in done], "refused_transcriptions": refused}
        )

    app = web.Application()
    app.router.add_get("/take", take)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    control = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(json.dumps({"base_url": server.base_url, "control_url": control}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await server.close()


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
