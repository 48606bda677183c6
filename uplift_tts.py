"""Builds the companion's TTS: Uplift AI when configured, OpenAI TTS otherwise, each falling
back to the other; a companion's own voice puts its provider first.

`UpliftTTS` speaks the wire protocol of livekit-plugins-upliftai (over `uplift_socket`) with
its own streams: the plugin's streams turn an Uplift `error` message, a dropped connection or a
silent server into "no audio" (retried as if transient) and a refused API key into a
retryable connection error. Here each becomes an `APIStatusError`, `APIConnectionError`
or `APITimeoutError` whose `retryable` says whether trying again can help, which is what
`FallbackAdapter` and the framework's retry loop act on.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from livekit.agents import (
    APIConnectOptions,
    APIError,
    tokenize,
    tts,
    utils,
)
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from livekit.plugins import openai as lk_openai
from livekit.plugins import upliftai
from livekit.plugins.upliftai.tts import (
    DEFAULT_SAMPLE_RATE,
    OutputFormat,
    get_content_type_from_output_format,
)

from core.config import Settings, TTSProvider
from core.errors import ConfigError
from uplift_socket import UpliftSocket

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
    def from_settings(cls, settings: Settings, *, voice_id: str | None = None) -> UpliftOptions:
        key = settings.upliftai_api_key
        return cls(
            api_key=key.get_secret_value() if key is not None else "",
            base_url=settings.upliftai_base_url,
            voice_id=voice_id or settings.upliftai_voice_id,
        )


def is_uplift_voice(voice: str) -> bool:
    """Uplift voice ids look like `v_meklc281`; anything else names an OpenAI voice."""
    return voice.startswith("v_")


def build_tts(
    settings: Settings,
    *,
    voice: str | None = None,
    instructions: str | None = None,
    http_session: httpx.AsyncClient | None = None,
) -> tts.TTS:
    """The TTS for a session or a companion: the preferred provider, the other as fallback.

    Args:
        settings: parsed settings; UPLIFTAI_API_KEY / TTS_PROVIDER decide the provider.
        voice: a companion's own voice, an Uplift voice id (`v_...`) or an OpenAI voice name.
            Only its provider can say it, so that provider speaks first whatever TTS_PROVIDER
            prefers; the other one, when configured, is the fallback in its default voice
            (TTS_VOICE or UPLIFTAI_VOICE_ID). ConfigError if its provider is not configured.
        instructions: how OpenAI TTS should speak (e.g. in which language), first or fallback.
        http_session: shared HTTP client (e.g. `ModelClients.http`) for OpenAI TTS requests;
            it stays open when the TTS is closed. None: OpenAI TTS opens and closes its own.
    """
    uplift_key = settings.upliftai_api_key
    has_uplift = uplift_key is not None and bool(uplift_key.get_secret_value().strip())
    uplift_voice, openai_voice = settings.upliftai_voice_id, settings.tts_voice
    if voice is not None:
        prefer_uplift = is_uplift_voice(voice)
        _check_voice_provider(voice, prefer_uplift, has_uplift, settings)
        reason = "the companion's own voice"
        if prefer_uplift:
            uplift_voice = voice
        else:
            openai_voice = voice
    elif settings.tts_provider is TTSProvider.OPENAI:
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

    uplift = (
        UpliftTTS(UpliftOptions.from_settings(settings, voice_id=uplift_voice))
        if has_uplift
        else None
    )
    # Without a key or server of its own, OpenAI TTS could only fail: no use as a fallback.
    openai_tts = (
        _openai_tts(settings, http_session, voice=openai_voice, instructions=instructions)
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


def _check_voice_provider(
    voice: str, uplift_voice: bool, has_uplift: bool, settings: Settings
) -> None:
    if uplift_voice and not has_uplift:
        raise ConfigError(
            f"the voice {voice!r} is an Uplift AI voice, and Uplift AI is not configured",
            suggestion="set UPLIFTAI_API_KEY, or give the companion an OpenAI voice (e.g. coral)",
        )
    if not uplift_voice and not settings.has_llm_credentials:
        raise ConfigError(
            f"the voice {voice!r} is an OpenAI voice, and OpenAI TTS is not configured",
            suggestion="set OPENAI_API_KEY or OPENAI_BASE_URL, or give the companion an Uplift "
            "voice id (v_...)",
        )


def _openai_tts(
    settings: Settings,
    http_session: httpx.AsyncClient | None,
    *,
    voice: str,
    instructions: str | None,
) -> lk_openai.TTS:
    base_url = settings.openai_base_url or OPENAI_DEFAULT_BASE_URL
    # pcm is 24 kHz 16-bit mono, the plugin's rate: no decoder between the socket and the room.
    options: dict[str, Any] = {
        "model": settings.tts_model,
        "voice": voice,
        "response_format": "pcm",
    }
    if instructions is not None:
        options["instructions"] = instructions
    if http_session is None:
        return lk_openai.TTS(base_url=base_url, api_key=settings.llm_api_key(), **options)
    # The livekit retry loop decides about retries, so the SDK must not add its own.
    client = openai.AsyncOpenAI(
        api_key=settings.llm_api_key(),
        base_url=base_url,
        max_retries=0,
        # openai accepts an httpx client as well as an httpx2 one (it checks both at run
        # time); its annotation names only httpx2.
        http_client=http_session,  # type: ignore[arg-type]
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


class UpliftTTS(tts.TTS):
    """Uplift AI text-to-speech over its Socket.IO API, with errors livekit can act on.

    One connection per instance, opened on first use (or `prewarm`) and shared by all its
    requests, which Uplift tells apart by `requestId`.
    """

    def __init__(self, options: UpliftOptions) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=True, aligned_transcript=False),
            sample_rate=DEFAULT_SAMPLE_RATE,  # every streamable format is 22.05 kHz
            num_channels=1,
        )
        self._options = options
        self._socket = UpliftSocket(base_url=options.base_url, api_key=options.api_key)
        self._sentence_tokenizer = tokenize.blingfire.SentenceTokenizer(retain_format=True)
        self._streams: weakref.WeakSet[UpliftSynthesizeStream] = weakref.WeakSet()
        self._prewarm_task: asyncio.Task[None] | None = None

    @property
    def provider(self) -> str:
        return "upliftai"

    @property
    def model(self) -> str:
        return self._options.voice_id

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
                await self._socket.connect(timeout_s=DEFAULT_API_CONNECT_OPTIONS.timeout)
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

    def _request(self, text: str, request_id: str, timeout: float) -> AsyncGenerator[bytes]:
        message: dict[str, Any] = {
            "type": "synthesize",
            "requestId": request_id,
            "text": text,
            "voiceId": self._options.voice_id,
            "outputFormat": self._options.output_format,
        }
        return self._socket.audio(message, timeout_s=timeout)

    def _mime_type(self) -> str:
        return get_content_type_from_output_format(self._options.output_format)


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
