"""Builds the companion's TTS: Uplift AI when configured, OpenAI TTS otherwise, each falling
back to the other.

`UpliftTTS` is the livekit-plugins-upliftai `TTS` (its options, voice settings and wire format)
with its own Socket.IO streams: the plugin's streams turn an Uplift `error` message, a dropped
connection or a silent server into "no audio" (retried as if transient) and a refused API key
into a retryable connection error. Here each becomes an `APIStatusError`, `APIConnectionError`
or `APITimeoutError` whose `retryable` says whether trying again can help, which is what
`FallbackAdapter` and the framework's retry loop act on.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import openai
import socketio  # type: ignore[import-untyped]
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    APITimeoutError,
    tokenize,
    tts,
    utils,
)
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from livekit.plugins import openai as lk_openai
from livekit.plugins import upliftai
from livekit.plugins.upliftai.tts import (
    WEBSOCKET_NAMESPACE,
    OutputFormat,
    get_content_type_from_output_format,
)

from core.config import Settings, TTSProvider
from core.errors import ConfigError

logger = logging.getLogger(__name__)

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"
# One quick retry (0.1 s later) before switching voices; the framework's default of two
# adds a 2 s wait, which is dead air in a conversation.
RETRIES_BEFORE_FALLBACK = 1
# Raw PCM needs no decoder; MP3 files decode back to back. A WAV/OGG header per sentence
# would break the one decoder a stream shares, and the plugin reports 22050 Hz for u-law.
_STREAMABLE_FORMATS = ("PCM_22050_16", "MP3_22050_32", "MP3_22050_64", "MP3_22050_128")


@dataclass(frozen=True)
class UpliftOptions:
    """How to reach Uplift AI and how it should speak.

    Attributes:
        api_key: the Uplift API key (`sk_api_...`); never logged or shown in repr.
        base_url: Socket.IO server; `wss://api.upliftai.org` in production.
        voice_id: Uplift voice, e.g. `v_meklc281`.
        output_format: `PCM_22050_16` (no decoding, lowest latency) or an `MP3_22050_*`.
    """

    api_key: str = field(repr=False)
    base_url: str = upliftai.tts.DEFAULT_BASE_URL
    voice_id: str = upliftai.DEFAULT_VOICE_ID
    output_format: OutputFormat = "PCM_22050_16"

    def __post_init__(self) -> None:
        if not self.api_key.strip():
            raise ConfigError(
                "Uplift AI needs an API key",
                suggestion="set UPLIFTAI_API_KEY or TTS_PROVIDER=openai",
            )
        if self.output_format not in _STREAMABLE_FORMATS:
            raise ConfigError(
                f"Uplift output format {self.output_format!r} cannot be streamed sentence by "
                "sentence",
                suggestion=f"use one of {', '.join(_STREAMABLE_FORMATS)}",
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> UpliftOptions:
        key = settings.upliftai_api_key
        return cls(
            api_key=key.get_secret_value() if key is not None else "",
            base_url=settings.upliftai_base_url,
            voice_id=settings.upliftai_voice_id,
        )


def build_tts(settings: Settings, *, http_session: httpx.AsyncClient | None = None) -> tts.TTS:
    """The TTS for the agent session: the preferred provider, with the other as fallback.

    Args:
        settings: parsed settings; UPLIFTAI_API_KEY / TTS_PROVIDER decide the provider.
        http_session: shared HTTP client (e.g. `ModelClients.http`) for OpenAI TTS requests;
            it stays open when the TTS is closed. None: OpenAI TTS opens and closes its own.
    """
    uplift_key = settings.upliftai_api_key
    has_uplift = uplift_key is not None and bool(uplift_key.get_secret_value().strip())
    if settings.tts_provider is TTSProvider.OPENAI:
        prefer_uplift, reason = False, "TTS_PROVIDER=openai"
    elif has_uplift:
        prefer_uplift = True
        reason = (
            "TTS_PROVIDER=upliftai"
            if settings.tts_provider is TTSProvider.UPLIFTAI
            else "UPLIFTAI_API_KEY is set"
        )
    else:
        prefer_uplift, reason = False, "UPLIFTAI_API_KEY is not set"

    uplift = UpliftTTS(UpliftOptions.from_settings(settings)) if has_uplift else None
    # Without a key or server of its own, OpenAI TTS could only fail: no use as a fallback.
    openai_tts = (
        _openai_tts(settings, http_session)
        if settings.has_llm_credentials or not prefer_uplift
        else None
    )
    if not settings.has_llm_credentials and not prefer_uplift:
        logger.warning(
            "OpenAI TTS has no OPENAI_API_KEY or OPENAI_BASE_URL; speech will fail until one "
            "is set (or set UPLIFTAI_API_KEY)"
        )

    ordered = [uplift, openai_tts] if prefer_uplift else [openai_tts, uplift]
    instances: list[tts.TTS] = [t for t in ordered if t is not None]
    names = ["Uplift AI" if isinstance(t, UpliftTTS) else "OpenAI TTS" for t in instances]
    if len(instances) == 1:
        logger.info("TTS: %s (%s), no fallback configured", names[0], reason)
        return instances[0]
    logger.info("TTS: %s (%s), falling back to %s", names[0], reason, names[1])
    return _FallbackTTS(instances, max_retry_per_tts=RETRIES_BEFORE_FALLBACK)


def _openai_tts(settings: Settings, http_session: httpx.AsyncClient | None) -> lk_openai.TTS:
    base_url = settings.openai_base_url or OPENAI_DEFAULT_BASE_URL
    # pcm is 24 kHz 16-bit mono, the plugin's rate: no decoder between the socket and the room.
    options: dict[str, Any] = {
        "model": settings.tts_model,
        "voice": settings.tts_voice,
        "response_format": "pcm",
    }
    if http_session is None:
        return lk_openai.TTS(base_url=base_url, api_key=settings.llm_api_key(), **options)
    # The livekit retry loop decides about retries, so the SDK must not add its own.
    client = openai.AsyncOpenAI(
        api_key=settings.llm_api_key(), base_url=base_url, max_retries=0, http_client=http_session
    )
    return lk_openai.TTS(client=client, **options)


class _FallbackTTS(tts.FallbackAdapter):
    """`FallbackAdapter` that also closes the TTS instances it was given (1.8.9's leaves them
    open). Resampling is the adapter's: it speaks at the highest rate (OpenAI's 24 kHz) and
    resamples Uplift's 22.05 kHz audio on the fly."""

    async def aclose(self) -> None:
        await super().aclose()
        for instance in self._tts_instances:
            await instance.aclose()


class UpliftTTS(upliftai.TTS):
    """Uplift AI text-to-speech over its Socket.IO API, with errors livekit can act on.

    One connection per instance, opened on first use (or `prewarm`) and shared by all its
    requests, which Uplift tells apart by `requestId`.
    """

    def __init__(self, options: UpliftOptions) -> None:
        super().__init__(
            base_url=options.base_url,
            api_key=options.api_key,
            voice_id=options.voice_id,
            output_format=options.output_format,
        )
        self._socket = _UpliftSocket(base_url=options.base_url, api_key=options.api_key)
        self._sentence_tokenizer = tokenize.blingfire.SentenceTokenizer(retain_format=True)
        self._prewarm_task: asyncio.Task[None] | None = None

    @property
    def provider(self) -> str:
        return "upliftai"

    @property
    def model(self) -> str:
        return self._opts.voice_settings.voice_id

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> UpliftChunkedStream:
        return UpliftChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> UpliftSynthesizeStream:
        stream = UpliftSynthesizeStream(tts=self, conn_options=conn_options)
        self._streams.add(stream)
        return stream

    def prewarm(self) -> None:
        async def _connect() -> None:
            try:
                await self._socket.connect(DEFAULT_API_CONNECT_OPTIONS.timeout)
            except APIError as exc:
                # The first request connects again and reports the failure where it matters.
                logger.debug("Uplift AI prewarm failed: %s", type(exc).__name__)

        if self._prewarm_task is None or self._prewarm_task.done():
            self._prewarm_task = asyncio.create_task(_connect())

    async def aclose(self) -> None:
        if self._prewarm_task is not None:
            await utils.aio.cancel_and_wait(self._prewarm_task)
        for stream in list(self._streams):
            await stream.aclose()
        self._streams.clear()
        await self._socket.aclose()

    def _request(self, text: str, request_id: str, timeout: float) -> AsyncIterator[bytes]:
        voice = self._opts.voice_settings
        message: dict[str, Any] = {
            "type": "synthesize",
            "requestId": request_id,
            "text": text,
            "voiceId": voice.voice_id,
            "outputFormat": voice.output_format,
        }
        if self._opts.phrase_replacement_config_id:
            message["phraseReplacementConfigId"] = self._opts.phrase_replacement_config_id
        return self._socket.audio(message, timeout=timeout)

    def _mime_type(self) -> str:
        return get_content_type_from_output_format(self._opts.voice_settings.output_format)


class UpliftChunkedStream(tts.ChunkedStream):
    """One text, one Uplift request."""

    def __init__(self, *, tts: UpliftTTS, input_text: str, conn_options: APIConnectOptions):
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._uplift = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        request_id = utils.shortuuid()
        output_emitter.initialize(
            request_id=request_id,
            sample_rate=self._uplift.sample_rate,
            num_channels=self._uplift.num_channels,
            mime_type=self._uplift._mime_type(),
        )
        if self._input_text.strip():
            chunks = self._uplift._request(
                self._input_text, request_id, self._conn_options.timeout
            )
            async with aclosing(chunks):
                async for chunk in chunks:
                    output_emitter.push(chunk)


class UpliftSynthesizeStream(tts.SynthesizeStream):
    """Streamed text, one Uplift request per sentence as soon as the sentence is complete."""

    def __init__(self, *, tts: UpliftTTS, conn_options: APIConnectOptions):
        super().__init__(tts=tts, conn_options=conn_options)
        self._uplift = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        request_id = utils.shortuuid()
        output_emitter.initialize(
            request_id=request_id,
            sample_rate=self._uplift.sample_rate,
            num_channels=self._uplift.num_channels,
            mime_type=self._uplift._mime_type(),
            stream=True,
        )
        output_emitter.start_segment(segment_id=request_id)
        sentences = self._uplift._sentence_tokenizer.stream()

        async def _forward_input() -> None:
            async for data in self._input_ch:
                if isinstance(data, self._FlushSentinel):
                    sentences.flush()
                else:
                    sentences.push_text(data)
            sentences.end_input()

        async def _speak() -> None:
            async for sentence in sentences:
                if not (text := sentence.token.strip()):
                    continue
                self._mark_started()
                chunks = self._uplift._request(text, utils.shortuuid(), self._conn_options.timeout)
                async with aclosing(chunks):
                    async for chunk in chunks:
                        output_emitter.push(chunk)

        tasks = [asyncio.create_task(_forward_input()), asyncio.create_task(_speak())]
        try:
            await asyncio.gather(*tasks)
        finally:
            await sentences.aclose()
            await utils.aio.cancel_and_wait(*tasks)


class _UpliftSocket:
    """The Socket.IO connection to Uplift: connects lazily, routes `message` events to the
    request they name and turns every failure into a livekit `APIError`."""

    def __init__(self, *, base_url: str, api_key: str) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._sio: socketio.AsyncClient | None = None
        # Resolved by the server's `ready` message; failed by an error or hang-up before it.
        self._ready: asyncio.Future[None] | None = None
        self._connect_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Queue[bytes | APIError | None]] = {}

    def _is_open(self) -> bool:
        ready = self._ready
        return (
            self._sio is not None
            and self._sio.connected
            and ready is not None
            and ready.done()
            and not ready.cancelled()
            and ready.exception() is None
        )

    async def connect(self, timeout: float) -> socketio.AsyncClient:
        async with self._connect_lock:
            if self._is_open():
                assert self._sio is not None
                return self._sio
            await self._drop()
            # reconnection=False: a lost connection is re-made by the next request, on that
            # request's own deadline. handle_sigint=False: the LiveKit worker owns Ctrl+C.
            sio = socketio.AsyncClient(
                reconnection=False, handle_sigint=False, logger=False, engineio_logger=False
            )
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            refusals: list[Any] = []

            # Events from a connection already replaced must not touch the current one.
            async def on_message(data: Any) -> None:
                if sio is self._sio:
                    self._on_message(data, ready)

            async def on_disconnect(reason: Any = None) -> None:
                if sio is self._sio:
                    self._on_disconnect(ready)

            sio.on("message", on_message, namespace=WEBSOCKET_NAMESPACE)
            sio.on("disconnect", on_disconnect, namespace=WEBSOCKET_NAMESPACE)
            sio.on("connect_error", refusals.append, namespace=WEBSOCKET_NAMESPACE)
            self._sio, self._ready = sio, ready
            try:
                async with asyncio.timeout(timeout):
                    await sio.connect(
                        self._base_url,
                        auth={"token": self._api_key},
                        namespaces=[WEBSOCKET_NAMESPACE],
                        transports=["websocket"],
                        wait_timeout=timeout,
                    )
                    await ready
            except TimeoutError:
                await self._drop()
                raise APITimeoutError("Uplift AI did not accept the connection in time") from None
            except APIError:
                await self._drop()
                raise
            except (socketio.exceptions.ConnectionError, aiohttp.ClientError, OSError):
                refused = bool(sio.failed_namespaces)
                await self._drop()
                # `from None`: the transport's exception may carry the URL and auth payload.
                if refused:
                    raise _refusal_error(refusals[-1] if refusals else None) from None
                raise APIConnectionError("could not connect to Uplift AI") from None
            return sio

    async def audio(self, message: dict[str, Any], *, timeout: float) -> AsyncIterator[bytes]:
        """Send one `synthesize` message and yield its audio until `audio_end`."""
        sio = await self.connect(timeout)
        request_id = message["requestId"]
        queue: asyncio.Queue[bytes | APIError | None] = asyncio.Queue()
        self._pending[request_id] = queue
        finished = False
        try:
            try:
                await sio.emit("synthesize", message, namespace=WEBSOCKET_NAMESPACE)
            except socketio.exceptions.SocketIOError:
                raise APIConnectionError("lost the connection to Uplift AI") from None
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        item = await queue.get()
                except TimeoutError:
                    raise APITimeoutError("Uplift AI sent no audio in time") from None
                if item is None:
                    finished = True
                    return
                if isinstance(item, APIError):
                    finished = True
                    raise item
                yield item
        finally:
            self._pending.pop(request_id, None)
            if not finished and sio.connected:
                # Interrupted or timed out: stop Uplift generating audio nobody will play.
                with suppress(Exception):
                    cancel = {"type": "cancel", "requestId": request_id}
                    await sio.emit("cancel", cancel, namespace=WEBSOCKET_NAMESPACE)

    async def aclose(self) -> None:
        async with self._connect_lock:
            await self._drop()

    async def _drop(self) -> None:
        sio, self._sio = self._sio, None
        ready, self._ready = self._ready, None
        if ready is not None:
            if not ready.done():
                ready.cancel()
            elif not ready.cancelled():
                ready.exception()  # retrieved, so asyncio does not log it as forgotten
        if sio is not None:
            with suppress(Exception):
                await sio.disconnect()

    def _on_message(self, data: Any, ready: asyncio.Future[None]) -> None:
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "ready":
            if not ready.done():
                ready.set_result(None)
            return
        request_id = data.get("requestId")
        queue = self._pending.get(request_id) if isinstance(request_id, str) else None
        if kind == "audio" and queue is not None and data.get("audio"):
            queue.put_nowait(base64.b64decode(data["audio"]))
        elif kind == "audio_end" and queue is not None:
            queue.put_nowait(None)
        elif kind == "error":
            error = _message_error(data)
            logger.warning("Uplift AI reported an error (status %s)", error.status_code)
            if queue is not None:
                queue.put_nowait(error)
            elif request_id is None and not ready.done():
                ready.set_exception(error)  # the session was refused (e.g. the key)
            elif request_id is None:
                # An error about the session rather than one request fails them all, so none
                # waits out its timeout. One naming a request we no longer track is ignored.
                for pending in self._pending.values():
                    pending.put_nowait(_message_error(data))

    def _on_disconnect(self, ready: asyncio.Future[None]) -> None:
        if not ready.done():
            ready.set_exception(APIConnectionError("Uplift AI hung up before it was ready"))
        for queue in self._pending.values():
            queue.put_nowait(APIConnectionError("Uplift AI closed the connection"))


# Uplift does not document its error codes: numeric HTTP-like codes are taken as they are,
# anything else is classified by words in the code and message.
_STATUS_HINTS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (401, ("unauthor", "authenticat", "api key", "apikey", "invalid token", "forbidden")),
    (429, ("rate limit", "too many", "concurren")),
    (402, ("credit", "quota", "balance", "payment", "insufficient")),
    (400, ("invalid", "not found", "unsupported", "too long", "exceed", "required")),
)


def _status_for(code: Any, message: str, *, default: int) -> int:
    if isinstance(code, int | str) and str(code).strip().isdigit():
        status = int(str(code).strip())
        if 400 <= status < 600:
            return status
    text = f"{code or ''} {message}".lower()
    for status, words in _STATUS_HINTS:
        if any(word in text for word in words):
            return status
    return default


def _message_error(data: dict[str, Any]) -> APIStatusError:
    message = str(data.get("message") or "error without a message")
    code = data.get("code")
    status = _status_for(code, message, default=500)
    # APIStatusError makes 4xx non-retryable (except 408/429) and 5xx retryable.
    return APIStatusError(
        f"Uplift AI: {message}",
        status_code=status,
        request_id=data.get("requestId"),
        body={"code": code, "message": message},
    )


def _refusal_error(data: Any) -> APIStatusError:
    # A refused namespace connect is Uplift checking the `auth` token, so 401 unless the
    # refusal says otherwise.
    payload = data if isinstance(data, dict) else {"message": data}
    message = str(payload.get("message") or "connection refused")
    extra = payload.get("data")
    code = payload.get("code") or (extra.get("code") if isinstance(extra, dict) else None)
    status = _status_for(code, message, default=401)
    return APIStatusError(
        f"Uplift AI refused the connection: {message}",
        status_code=status,
        body={"code": code, "message": message},
    )
