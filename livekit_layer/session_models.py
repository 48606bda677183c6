"""The models a session talks through: STT, LLM and TTS from settings, all over the shared
OpenAI-compatible client, with bounded retries; and a companion's own voice."""

from __future__ import annotations

from livekit.agents import AgentSession, APIConnectOptions, tts
from livekit.agents.types import NOT_GIVEN, NotGiven
from livekit.agents.vad import VAD
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.plugins import openai as lk_openai

from core.config import Settings
from livekit_layer.companion_session import CompanionSession, SessionUser
from services.composition import Services
from uplift_tts import build_tts

# After the first immediate retry; a voice user is waiting, so keep it short.
LLM_RETRY_INTERVAL_S = 1.0


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
        stt=lk_openai.STT(model=settings.stt_model, client=services.models.openai),
        llm=build_llm(services),
        tts=build_tts(settings, http_session=services.models.http),
        vad=vad,
        userdata=companion.user,
        conn_options=connect_options(settings),
    )


def companion_voice(companion: CompanionSession) -> tts.TTS | NotGiven:
    """The companion's own voice, or the session's default TTS when it has none.

    Uplift voice ids look like `v_...`; anything else names an OpenAI voice. Set per agent, so a
    hand-off to another companion also changes the voice.
    """
    voice = companion.companion.voice
    if not voice:
        return NOT_GIVEN
    services = companion.services
    field = "upliftai_voice_id" if voice.startswith("v_") else "tts_voice"
    settings = services.settings.model_copy(update={field: voice})
    return build_tts(settings, http_session=services.models.http)
