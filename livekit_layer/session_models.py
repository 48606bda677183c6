"""The models a session talks through: STT, LLM and TTS from settings, all over the shared
OpenAI-compatible client, with bounded retries; each companion's own ear and voice: the STT
hears its language, the TTS speaks with its voice (and, on OpenAI TTS, its language); and the
form in which the session hears the room."""

from __future__ import annotations

import logging

from livekit.agents import AgentSession, APIConnectOptions, stt, tts
from livekit.agents.types import NOT_GIVEN, NotGiven
from livekit.agents.vad import VAD
from livekit.agents.voice import room_io
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.plugins import openai as lk_openai

from core.config import Settings
from core.errors import ConfigError
from livekit_layer.companion_session import CompanionSession, SessionUser
from livekit_layer.session_prompts import language_name
from services.composition import Services
from uplift_tts import build_tts

logger = logging.getLogger(__name__)

# After the first immediate retry; a voice user is waiting, so keep it short.
LLM_RETRY_INTERVAL_S = 1.0
# OpenAI TTS models that take no `instructions` (the API refuses them).
TTS_WITHOUT_INSTRUCTIONS = ("tts-1",)
# The rate the session hears the room at. Silero VAD and LiveKit's turn detector infer at
# 16 kHz and resample any other rate frame by frame in the job process (livekit's default
# input is 24 kHz); OpenAI transcription takes 16 kHz speech as it is. The room's track is
# decoded and resampled natively either way.
INPUT_SAMPLE_RATE = 16_000


def connect_options(settings: Settings) -> SessionConnectOptions:
    """Bounded LLM retries and timeout: after them the session reports the error, and the
    companion apologizes (CompanionSession.attach) instead of going silent."""
    return SessionConnectOptions(
        llm_conn_options=APIConnectOptions(
            max_retry=settings.openai_max_retries,
            retry_interval=LLM_RETRY_INTERVAL_S,
            timeout=settings.openai_timeout_s,
        )
    )


def build_llm(services: Services) -> lk_openai.LLM:
    """The chat model over the shared client; the session retries, so the SDK does not (its
    retries on top would multiply the wait)."""
    return lk_openai.LLM(
        model=services.settings.llm_model, client=services.models.openai.with_options(max_retries=0)
    )


def build_session(companion: CompanionSession, vad: VAD) -> AgentSession[SessionUser]:
    """The session for one job: STT, LLM and TTS from settings; `vad` is the job process's
    (loaded once in prewarm)."""
    services = companion.services
    settings = services.settings
    return AgentSession(
        stt=companion_stt(companion),
        llm=build_llm(services),
        tts=build_tts(settings, http_session=services.models.http),
        vad=vad,
        userdata=companion.user,
        conn_options=connect_options(settings),
    )


def room_options() -> room_io.RoomOptions:
    """How the session joins the room: livekit's defaults, with the audio heard at
    `INPUT_SAMPLE_RATE`."""
    return room_io.RoomOptions(
        audio_input=room_io.AudioInputOptions(sample_rate=INPUT_SAMPLE_RATE)
    )


def transcription_language(code: str) -> str | None:
    """The ISO 639-1 code OpenAI transcription takes for a BCP 47 tag ("pt-BR" -> "pt"); None
    when the language has no two-letter code (then the STT detects it)."""
    primary = code.split("-")[0].lower()
    return primary if len(primary) == 2 else None


def companion_stt(companion: CompanionSession) -> stt.STT:
    """Speech-to-text told the companion's language, so that what the person says in it is
    transcribed as such. Set per agent: a hand-off to another companion changes it too."""
    services = companion.services
    language = transcription_language(companion.companion.language)
    return lk_openai.STT(
        model=services.settings.stt_model, client=services.models.openai,
        language=language or "en", detect_language=language is None,
    )


def companion_voice(companion: CompanionSession) -> tts.TTS | NotGiven:
    """The companion's own voice, or the session's default TTS when it has none and speaks
    English (or when the provider its voice belongs to is not configured: then a warning says
    what to set).

    An Uplift voice id (`v_...`) speaks through Uplift first, an OpenAI voice name through
    OpenAI first, whichever provider the session prefers (`build_tts`); an Uplift voice speaks
    the language it was made for. OpenAI TTS reads any language and is told the companion's
    when it is not English (its `instructions`), except on models that take none (tts-1,
    tts-1-hd). Set per agent, so a hand-off to another companion changes the voice;
    `SessionVoices` closes it when the agent leaves.
    """
    voice = companion.companion.voice
    language = companion.companion.language
    english = transcription_language(language) == "en"
    if not voice and english:
        return NOT_GIVEN
    services = companion.services
    settings = services.settings
    takes_instructions = not settings.tts_model.startswith(TTS_WITHOUT_INSTRUCTIONS)
    instructions = (
        f"Speak {language_name(language)} with a native accent."
        if takes_instructions and not english
        else None
    )
    try:
        return build_tts(
            settings, voice=voice or None, instructions=instructions,
            http_session=services.models.http,
        )
    except ConfigError as err:
        logger.warning(
            "the companion's voice cannot be used; speaking with the session's voice",
            extra={"error": str(err), "suggestion": err.suggestion},
        )
        return NOT_GIVEN
