"""The audio half of the loopback OpenAI server: `/v1/audio/speech` and
`/v1/audio/transcriptions`, as OpenAI's wire protocol has them.

Speech answers with real audio in the `response_format` asked for: a tone by default, or what
`voice(text)` renders (e.g. espeak-ng). Transcription reads the multipart upload, checks that it
is a PCM WAV file and, once utterances are registered, that it holds one of them: the audio a
VAD cuts from what was spoken must contain that utterance's sound sample for sample, and be
no longer than it by more than `max_extra_s` (the silence a VAD keeps around speech). It then
answers that utterance's text; audio that matches none is refused with a 400 that says why.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web

from tests.support.speech import Utterance, Wav, parse_wav

SPEECH_SAMPLE_RATE = 24_000
_AUDIO_MIME = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# PyAV container/codec per response_format (wav and pcm are written without PyAV).
_AV_FORMATS = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
}


def tone_pcm(seconds: float, sample_rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """A 440 Hz tone at a third of full scale: audible, clearly non-silent, never clipping."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    samples = (np.sin(2 * math.pi * 440.0 * t) * 32767 / 3).astype("<i2")
    return samples.tobytes()


def encode_audio(pcm: bytes, response_format: str, sample_rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """Mono 16-bit PCM in the container OpenAI's speech endpoint uses for `response_format`."""
    if response_format == "pcm":
        return pcm
    if response_format == "wav":
        buf = io.BytesIO()
        with wave.open(buf, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sample_rate)
            wav.writeframes(pcm)
        return buf.getvalue()
    import av  # only the compressed formats need it; it ships with livekit-agents
    from av.audio.stream import AudioStream

    container_name, codec = _AV_FORMATS[response_format]
    buf = io.BytesIO()
    with av.open(buf, "w", format=container_name) as container:
        stream = container.add_stream(codec, rate=sample_rate)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


@dataclass(frozen=True)
class SpokenReply:
    """One speech request: the text and the PCM (24 kHz, before encoding) sent back for it."""

    text: str
    pcm: bytes


class SpeechEndpoint:
    """POST /v1/audio/speech.

    Attributes:
        seconds: length of the tone answered when there is no `voice`.
        voice: async text -> 16-bit mono PCM at 24 kHz (OpenAI's rate), or None for the tone.
        spoken: every answered request, in order.
    """

    def __init__(self) -> None:
        self.seconds = 0.25
        self.voice: Callable[[str], Awaitable[bytes]] | None = None
        self.spoken: list[SpokenReply] = []

    async def answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        text = body.get("input")
        if not text:
            raise web.HTTPBadRequest(reason="'input' is required")
        response_format = body.get("response_format") or "mp3"
        if response_format not in _AUDIO_MIME:
            raise web.HTTPBadRequest(reason=f"unsupported response_format {response_format!r}")
        pcm = await self.voice(text) if self.voice is not None else tone_pcm(self.seconds)
        self.spoken.append(SpokenReply(text, pcm))
        audio = await asyncio.to_thread(encode_audio, pcm, response_format)
        if body.get("stream_format") != "sse":
            return web.Response(body=audio, headers={"Content-Type": _AUDIO_MIME[response_format]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        step = 4096
        for start in range(0, len(audio), step):
            event = {
                "type": "speech.audio.delta",
                "audio": base64.b64encode(audio[start : start + step]).decode("ascii"),
            }
            await _send_event(resp, event)
        tokens = max(1, len(text.split()))
        usage = {"input_tokens": tokens, "output_tokens": 10, "total_tokens": tokens + 10}
        await _send_event(resp, {"type": "speech.audio.done", "usage": usage})
        await resp.write_eof()
        return resp


@dataclass(frozen=True)
class Heard:
    """One transcription request as the server understood it."""

    sample_rate: int
    channels: int
    duration: float
    text: str | None  # None: refused


class TranscriptionEndpoint:
    """POST /v1/audio/transcriptions.

    Attributes:
        transcript: the answer while no utterance is registered (or callable(form) -> text).
        max_extra_s: how much longer than an utterance's sound the received audio may be.
        heard: every WAV received, with the text answered for it.
    """

    def __init__(self) -> None:
        self.transcript: str | Callable[[dict[str, Any]], str] = "hello there"
        self.max_extra_s = 1.5
        self.heard: list[Heard] = []
        self._utterances: list[Utterance] = []

    def register(self, *utterances: Utterance) -> None:
        """Answer audio holding one of `utterances` with its text (and refuse other audio)."""
        self._utterances.extend(utterances)

    async def answer(self, request: web.Request, form: dict[str, Any]) -> web.Response:
        upload = form.get("file")
        if not isinstance(upload, dict):
            raise web.HTTPBadRequest(reason="'file' is required")
        try:
            wav = parse_wav(upload["data"])
        except ValueError as exc:
            raise web.HTTPBadRequest(reason=f"Invalid file format: {exc}") from None
        text = self._text_for(wav, form)
        response_format = form.get("response_format", "json")
        if response_format == "text":
            return web.Response(text=text, content_type="text/plain")
        if response_format == "verbose_json":
            verbose = {"task": "transcribe", "language": "english", "duration": wav.duration}
            return web.json_response({**verbose, "text": text, "segments": []})
        seconds = math.ceil(wav.duration)
        return web.json_response({"text": text, "usage": {"type": "duration", "seconds": seconds}})

    def _text_for(self, wav: Wav, form: dict[str, Any]) -> str:
        if not self._utterances:
            text = self.transcript(form) if callable(self.transcript) else self.transcript
            self.heard.append(Heard(wav.sample_rate, wav.channels, wav.duration, text))
            return text
        matches = [u for u in self._utterances if self._holds(wav, u)]
        if len(matches) != 1:
            self.heard.append(Heard(wav.sample_rate, wav.channels, wav.duration, None))
            known = ", ".join(
                f"{u.voiced_duration:.2f} s at {u.sample_rate} Hz" for u in self._utterances
            )
            raise web.HTTPBadRequest(
                reason=f"audio of {wav.duration:.2f} s ({wav.channels} channel(s) at "
                f"{wav.sample_rate} Hz) matches {len(matches)} registered utterances ({known})"
            )
        self.heard.append(Heard(wav.sample_rate, wav.channels, wav.duration, matches[0].text))
        return matches[0].text

    def _holds(self, wav: Wav, utterance: Utterance) -> bool:
        if (wav.sample_rate, wav.channels, wav.bits) != (utterance.sample_rate, 1, 16):
            return False
        extra = wav.duration - utterance.voiced_duration
        if not 0.0 <= extra <= self.max_extra_s:
            return False
        voiced = utterance.voiced
        start = wav.pcm.find(voiced)
        while start != -1 and start % 2:  # a match must start on a sample boundary
            start = wav.pcm.find(voiced, start + 1)
        return start != -1


async def read_form(request: web.Request) -> dict[str, Any]:
    """A multipart body as {name: text} with files as {"filename", "size", "data"}."""
    form: dict[str, Any] = {}
    async for part in await request.multipart():
        if not isinstance(part, BodyPartReader):
            raise web.HTTPBadRequest(reason="nested multipart bodies are not supported")
        if part.filename:
            data = await part.read()
            form[part.name or "file"] = {
                "filename": part.filename, "size": len(data), "data": bytes(data)
            }
        else:
            form[part.name or ""] = await part.text()
    return form


async def _send_event(resp: web.StreamResponse, event: dict[str, Any]) -> None:
    await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
