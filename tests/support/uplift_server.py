"""A loopback server that speaks Uplift AI's Socket.IO text-to-speech protocol, for tests.

The real python-socketio client inside `uplift_tts.UpliftTTS` runs against it:

    async with UpliftStubServer(api_key="test-key") as srv:
        tts = UpliftTTS(UpliftOptions(api_key="test-key", base_url=srv.url))

Protocol (namespace `/text-to-speech/multi-stream`, `auth={"token": key}`): on connect the
server sends `message` {"type": "ready", "sessionId"}; each `synthesize` event
{"type", "requestId", "text", "voiceId", "outputFormat"} is answered with `message` events
audio_start, audio (base64, `sequence`), ..., audio_end, or one `error`
{"type": "error", "requestId", "code", "message"}. A wrong token is refused at connect.
Every connect (with its auth), synthesize and cancel message is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import socketio  # type: ignore[import-untyped]
from aiohttp import web

from tests.support.openai_audio import encode_audio

NAMESPACE = "/text-to-speech/multi-stream"
SAMPLE_RATE = 22_050
# Uplift output format -> the container `encode_audio` writes.
_FORMATS = {
    "PCM_22050_16": "pcm",
    "WAV_22050_16": "wav",
    "MP3_22050_32": "mp3",
    "MP3_22050_64": "mp3",
    "MP3_22050_128": "mp3",
}


@dataclass
class _Fault:
    remaining: int
    kind: str  # "error" | "hang" | "drop"
    message: str = ""
    code: Any = None


def tone_pcm(seconds: float, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono 330 Hz tone (a different pitch from the OpenAI stub's, for telling apart)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (np.sin(2 * math.pi * 330.0 * t) * 32767 / 4).astype("<i2").tobytes()


class UpliftStubServer:
    """Uplift-compatible Socket.IO server on 127.0.0.1 (a free port).

    Attributes:
        api_key: the token connects must present; None accepts any.
        chunks: audio messages per request; each carries `chunk_seconds` of a tone.
        connects: the `auth` payload of every connect attempt, accepted or not.
        requests: every `synthesize` payload, in order.
        request_sids: the connection (Socket.IO sid) each request came on, in the same order.
        cancels: every `cancel` payload.
        sent_pcm: request id -> the PCM the server synthesized for it (before encoding).
    """

    def __init__(
        self, *, api_key: str | None = "test-key", chunks: int = 3, chunk_seconds: float = 0.1
    ) -> None:
        self.api_key = api_key
        self.chunks = chunks
        self.chunk_seconds = chunk_seconds
        self.connects: list[Any] = []
        self.requests: list[dict[str, Any]] = []
        self.request_sids: list[str] = []
        self.cancels: list[dict[str, Any]] = []
        self.sent_pcm: dict[str, bytes] = {}
        # What a connect that passes the key check gets: "ready", an `error` message
        # (`session_error`, no requestId) or "silence" (nothing at all).
        self.greeting = "ready"
        self.session_error: dict[str, Any] = {"code": "UNAUTHORIZED", "message": "Invalid API key"}
        self.refusal: str | None = None
        self._faults: list[_Fault] = []
        self._hung: set[str] = set()
        self._sids: set[str] = set()
        self._connections_changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.sio = socketio.AsyncServer(
            async_mode="aiohttp", logger=False, engineio_logger=False, cors_allowed_origins="*"
        )
        self.sio.on("connect", self._connect, namespace=NAMESPACE)
        self.sio.on("synthesize", self._synthesize, namespace=NAMESPACE)
        self.sio.on("cancel", self._cancel, namespace=NAMESPACE)
        self.sio.on("disconnect", self._disconnect, namespace=NAMESPACE)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> UpliftStubServer:
        app = web.Application()
        self.sio.attach(app)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port or 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            for sid in list(self._sids):
                await self.sio.disconnect(sid, namespace=NAMESPACE)
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> UpliftStubServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("UpliftStubServer is not started")
        return f"http://127.0.0.1:{self.port}"

    # --- test controls -----------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, message: str = "Synthesis failed", code: Any = None) -> None:
        """Answer the next `n` synthesize requests with an `error` message."""
        self._faults.append(_Fault(n, "error", message, code))

    def hang_next(self, n: int = 1) -> None:
        """Accept the next `n` synthesize requests and never answer them."""
        self._faults.append(_Fault(n, "hang"))

    def drop_next(self, n: int = 1) -> None:
        """Send one audio chunk for the next `n` requests, then disconnect the client."""
        self._faults.append(_Fault(n, "drop"))

    @property
    def open_connections(self) -> int:
        return len(self._sids)

    async def wait_for_open_connections(self, count: int) -> None:
        """Return once exactly `count` clients are connected (bound it with a timeout)."""
        async with self._connections_changed:
            await self._connections_changed.wait_for(lambda: len(self._sids) == count)

    def voices_on_open_connections(self) -> set[str]:
        """The voice ids requested over the connections still open."""
        return {
            str(r.get("voiceId")) for r, sid in zip(self.requests, self.request_sids, strict=True)
            if sid in self._sids
        }

    def texts(self) -> list[str]:
        return [r.get("text", "") for r in self.requests]

    # --- protocol ------------------------------------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        self.connects.append(auth)
        token = auth.get("token") if isinstance(auth, dict) else None
        if self.refusal is not None:
            raise socketio.exceptions.ConnectionRefusedError(self.refusal)
        if self.api_key is not None and token != self.api_key:
            raise socketio.exceptions.ConnectionRefusedError("Invalid API key")
        await self._connected(sid)
        if self.greeting == "error":
            await self._send(sid, type="error", **self.session_error)
        elif self.greeting == "ready":
            await self._send(sid, type="ready", sessionId=f"session_{uuid.uuid4().hex[:12]}")

    async def _disconnect(self, sid: str, reason: Any = None) -> None:
        async with self._connections_changed:
            self._sids.discard(sid)
            self._connections_changed.notify_all()

    async def _connected(self, sid: str) -> None:
        async with self._connections_changed:
            self._sids.add(sid)
            self._connections_changed.notify_all()

    async def _cancel(self, sid: str, data: Any) -> None:
        self.cancels.append(data)

    async def _synthesize(self, sid: str, data: Any) -> None:
        self.requests.append(data)
        self.request_sids.append(sid)
        request_id = data.get("requestId") if isinstance(data, dict) else None
        fault = self._take_fault()
        if fault is not None and fault.kind == "hang":
            self._hung.add(str(request_id))
            return
        if fault is not None and fault.kind == "error":
            await self._send(sid, type="error", requestId=request_id, code=fault.code,
                             message=fault.message)
            return
        fmt = _FORMATS.get(str(data.get("outputFormat", "PCM_22050_16")))
        if not request_id or not data.get("text") or fmt is None:
            await self._send(sid, type="error", requestId=request_id, code=400,
                             message="requestId, text and a supported outputFormat are required")
            return
        # Serve in the background like the real service, so requests overlap on one socket.
        drop = fault is not None and fault.kind == "drop"
        task = asyncio.create_task(self._stream_audio(sid, str(request_id), fmt, drop=drop))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stream_audio(self, sid: str, request_id: str, fmt: str, *, drop: bool) -> None:
        pcm = tone_pcm(self.chunk_seconds * self.chunks)
        self.sent_pcm[request_id] = pcm
        audio = await asyncio.to_thread(encode_audio, pcm, fmt, SAMPLE_RATE)
        await self._send(sid, type="audio_start", requestId=request_id,
                         timestamp=int(time.time() * 1000))
        size = math.ceil(len(audio) / self.chunks)
        for sequence, start in enumerate(range(0, len(audio), size)):
            chunk = base64.b64encode(audio[start : start + size]).decode("ascii")
            await self._send(sid, type="audio", requestId=request_id, audio=chunk,
                             sequence=sequence)
            if drop:
                await self.sio.disconnect(sid, namespace=NAMESPACE)
                return
            await asyncio.sleep(0)
        await self._send(sid, type="audio_end", requestId=request_id)

    async def _send(self, sid: str, **message: Any) -> None:
        await self.sio.emit("message", message, to=sid, namespace=NAMESPACE)

    def _take_fault(self) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0:
                fault.remaining -= 1
                return fault
        return None
