"""uplift_tts against loopback servers: Uplift's Socket.IO protocol and OpenAI's speech API.

The real python-socketio client, the real livekit OpenAI TTS plugin and livekit's
FallbackAdapter run unchanged; only the two paid services are replaced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from livekit import rtc
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIStatusError,
    APITimeoutError,
    tts,
)
from livekit.plugins import openai as lk_openai

from tests.support.openai_server import OpenAIStubServer
from tests.support.servers import free_port
from tests.support.uplift_server import SAMPLE_RATE as UPLIFT_RATE
from tests.support.uplift_server import UpliftStubServer
from uplift_tts import UpliftOptions, UpliftTTS, build_tts

pytestmark = pytest.mark.integration

UPLIFT_KEY = "sk_api_uplift_test_4f1c"
OPENAI_KEY = "sk-openai-test-9b7e"
OPENAI_RATE = 24_000
TEXT = "Good evening, it is lovely to hear from you again."
NO_RETRY = APIConnectOptions(max_retry=0, timeout=5.0)


@pytest.fixture
async def uplift() -> AsyncIterator[UpliftStubServer]:
    async with UpliftStubServer(api_key=UPLIFT_KEY) as server:
        yield server


@pytest.fixture
async def openai_stub() -> AsyncIterator[OpenAIStubServer]:
    async with OpenAIStubServer(api_key=OPENAI_KEY) as server:
        yield server


@pytest.fixture
def both(make_settings, uplift: UpliftStubServer, openai_stub: OpenAIStubServer):
    """Settings with Uplift configured and OpenAI TTS available as the fallback."""

    def build(**overrides: Any):
        values: dict[str, Any] = {
            "upliftai_api_key": UPLIFT_KEY,
            "upliftai_base_url": uplift.url,
            "openai_api_key": OPENAI_KEY,
            "openai_base_url": openai_stub.base_url,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[tts.TTS], tts.TTS]]:
    made: list[tts.TTS] = []

    def track(instance: tts.TTS) -> tts.TTS:
        made.append(instance)
        return instance

    yield track
    for instance in made:
        await instance.aclose()


def availability_log(adapter: tts.TTS) -> tuple[list[bool], asyncio.Event]:
    """Records the adapter's availability changes; the event is set when one comes back."""
    changes: list[bool] = []
    recovered = asyncio.Event()

    def on_change(ev: Any) -> None:
        changes.append(ev.available)
        if ev.available:
            recovered.set()

    adapter.on("tts_availability_changed", on_change)
    return changes, recovered


async def collect_stream(stream: tts.SynthesizeStream, text: str) -> rtc.AudioFrame:
    async with stream:
        stream.push_text(text)
        stream.end_input()
        frames = [ev.frame async for ev in stream]
    return rtc.combine_audio_frames(frames)


def speech_requests(server: OpenAIStubServer) -> list[dict[str, Any]]:
    return [r.json for r in server.requests_to("/audio/speech")]


async def eventually(condition: Callable[[], bool]) -> None:
    # The server records messages on its own task; give it a bounded chance to catch up.
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met")


# --- Uplift on its own -------------------------------------------------------------------------


async def test_uplift_synthesis_returns_the_servers_audio_and_sends_the_documented_messages(
    make_settings, uplift: UpliftStubServer, closing
) -> None:
    settings = make_settings(upliftai_api_key=UPLIFT_KEY, upliftai_base_url=uplift.url)
    engine = closing(build_tts(settings))
    assert isinstance(engine, UpliftTTS)  # no OpenAI credentials: nothing to fall back to

    frame = await engine.synthesize(TEXT).collect()

    assert uplift.connects == [{"token": UPLIFT_KEY}]
    [request] = uplift.requests
    assert request == {
        "type": "synthesize",
        "requestId": request["requestId"],
        "text": TEXT,
        "voiceId": settings.upliftai_voice_id,
        "outputFormat": "PCM_22050_16",
    }
    assert isinstance(request["requestId"], str) and request["requestId"]
    assert frame.sample_rate == UPLIFT_RATE and frame.num_channels == 1
    assert bytes(frame.data) == uplift.sent_pcm[request["requestId"]]


async def test_uplift_streaming_sends_one_request_per_sentence_over_one_connection(
    uplift: UpliftStubServer, closing
) -> None:
    engine = closing(UpliftTTS(UpliftOptions(api_key=UPLIFT_KEY, base_url=uplift.url)))
    first = "This is the first sentence of the reply."
    second = "And here is a second one that follows it."

    frame = await collect_stream(engine.stream(), f"{first} {second}")

    assert uplift.texts() == [first, second]
    assert len(uplift.connects) == 1
    ids = [r["requestId"] for r in uplift.requests]
    assert len(set(ids)) == 2
    assert bytes(frame.data) == uplift.sent_pcm[ids[0]] + uplift.sent_pcm[ids[1]]


async def test_mp3_output_is_decoded_to_pcm_frames(uplift: UpliftStubServer, closing) -> None:
    options = UpliftOptions(api_key=UPLIFT_KEY, base_url=uplift.url, output_format="MP3_22050_32")
    engine = closing(UpliftTTS(options))

    frame = await engine.synthesize(TEXT).collect()

    assert uplift.requests[0]["outputFormat"] == "MP3_22050_32"
    assert frame.sample_rate == UPLIFT_RATE
    # MP3 frames pad the start and end, so compare lengths loosely; the tone is 0.3 s.
    assert 0.25 < frame.duration < 0.45


async def test_prewarm_opens_the_one_connection_and_closing_the_adapter_closes_it(
    both, uplift: UpliftStubServer
) -> None:
    engine = build_tts(both())
    engine.prewarm()
    await eventually(lambda: uplift.open_connections == 1)

    await engine.synthesize(TEXT).collect()
    assert len(uplift.connects) == 1

    await engine.aclose()
    await eventually(lambda: uplift.open_connections == 0)


async def test_an_uplift_error_message_becomes_an_api_status_error_with_its_retryability(
    uplift: UpliftStubServer, closing
) -> None:
    engine = closing(UpliftTTS(UpliftOptions(api_key=UPLIFT_KEY, base_url=uplift.url)))
    uplift.fail_next(message="Voice v_unknown not found", code=404)
    uplift.fail_next(message="Too many concurrent requests")
    uplift.fail_next(message="Internal server error")

    outcomes = []
    for _ in range(3):
        with pytest.raises(APIStatusError) as caught:
            await engine.synthesize(TEXT, conn_options=NO_RETRY).collect()
        outcomes.append((caught.value.status_code, caught.value.retryable))

    assert outcomes == [(404, False), (429, True), (500, True)]
    assert len(uplift.connects) == 1  # an error message leaves the connection usable


async def test_a_non_retryable_uplift_error_is_not_retried(
    uplift: UpliftStubServer, closing
) -> None:
    engine = closing(UpliftTTS(UpliftOptions(api_key=UPLIFT_KEY, base_url=uplift.url)))
    uplift.fail_next(message="Invalid voice id", code=400)

    with pytest.raises(APIStatusError):
        await engine.synthesize(TEXT, conn_options=APIConnectOptions(max_retry=3)).collect()

    assert uplift.texts() == [TEXT]


async def test_a_refused_api_key_is_a_non_retryable_401_that_never_echoes_the_key(
    uplift: UpliftStubServer, closing
) -> None:
    wrong = "sk_api_wrong_key_0000"
    engine = closing(UpliftTTS(UpliftOptions(api_key=wrong, base_url=uplift.url)))

    with pytest.raises(APIStatusError) as caught:
        await engine.synthesize(TEXT, conn_options=APIConnectOptions(max_retry=3)).collect()

    assert caught.value.status_code == 401 and caught.value.retryable is False
    assert uplift.connects == [{"token": wrong}]  # refused once, not retried
    assert uplift.requests == []
    assert wrong not in str(caught.value) and wrong not in repr(caught.value)


async def test_a_session_error_instead_of_ready_fails_the_connect_with_its_status(
    uplift: UpliftStubServer, closing
) -> None:
    engine = closing(UpliftTTS(UpliftOptions(api_key=UPLIFT_KEY, base_url=uplift.url)))
    uplift.greeting = "error"

    with pytest.raises(APIStatusError) as caught:
        await engine.synthesize(TEXT, conn_options=APIConnectOptions(max_retry=3)).collect()

    assert caught.value.status_code == 401 and caught.value.retryable is False
    assert len(uplift.connects) == 1 and uplift.requests == []


async def test_a_server_that_never_says_ready_times_out(
    uplift: UpliftStubServer, closing
) -> None:
    engine = closing(UpliftTTS(UpliftOptions(api_key=UPLIFT_KEY, base_url=uplift.url)))
    uplift.greeting = "silence"

    with pytest.raises(APITimeoutError):
        await engine.synthesize(TEXT, conn_options=APIConnectOptions(max_retry=0, timeout=0.5)
                                ).collect()

    assert uplift.requests == []


async def test_a_silent_uplift_server_times_out_and_the_request_is_cancelled(
    uplift: UpliftStubServer, closing
) -> None:
    engine = closing(UpliftTTS(UpliftOptions(api_key=UPLIFT_KEY, base_url=uplift.url)))
    uplift.hang_next()

    with pytest.raises(APITimeoutError) as caught:
        await engine.synthesize(TEXT, conn_options=APIConnectOptions(max_retry=0, timeout=0.5)
                                ).collect()

    assert caught.value.retryable is True
    request_id = uplift.requests[0]["requestId"]
    await eventually(lambda: bool(uplift.cancels))
    assert uplift.cancels == [{"type": "cancel", "requestId": request_id}]


async def test_a_dropped_connection_is_retryable_and_the_next_request_reconnects(
    uplift: UpliftStubServer, closing
) -> None:
    engine = closing(UpliftTTS(UpliftOptions(api_key=UPLIFT_KEY, base_url=uplift.url)))
    uplift.drop_next()

    with pytest.raises(APIConnectionError) as caught:
        await engine.synthesize(TEXT, conn_options=NO_RETRY).collect()
    assert not isinstance(caught.value, APIStatusError)
    assert caught.value.retryable is True

    frame = await engine.synthesize(TEXT, conn_options=NO_RETRY).collect()
    assert bytes(frame.data) == uplift.sent_pcm[uplift.requests[1]["requestId"]]
    assert len(uplift.connects) == 2


async def test_an_unreachable_uplift_server_is_a_retryable_connection_error(closing) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    engine = closing(UpliftTTS(UpliftOptions(api_key=UPLIFT_KEY, base_url=url)))

    with pytest.raises(APIConnectionError) as caught:
        await engine.synthesize(TEXT, conn_options=NO_RETRY).collect()

    assert not isinstance(caught.value, APIStatusError)
    assert caught.value.retryable is True


# --- Uplift with OpenAI TTS as fallback ---------------------------------------------------------


async def test_with_both_configured_uplift_speaks_first_resampled_to_24khz(
    both, uplift: UpliftStubServer, openai_stub: OpenAIStubServer, closing
) -> None:
    engine = closing(build_tts(both()))
    assert isinstance(engine, tts.FallbackAdapter)
    assert engine.sample_rate == OPENAI_RATE

    frame = await engine.synthesize(TEXT).collect()

    assert uplift.texts() == [TEXT]
    assert speech_requests(openai_stub) == []
    assert frame.sample_rate == OPENAI_RATE
    assert frame.duration == pytest.approx(0.3, abs=0.02)  # the server's 0.3 s tone


async def test_an_uplift_error_message_falls_back_to_openai_tts_without_retrying_uplift(
    both, uplift: UpliftStubServer, openai_stub: OpenAIStubServer, closing
) -> None:
    engine = closing(build_tts(both()))
    changes, recovered = availability_log(engine)
    uplift.fail_next(message="Invalid voice id", code=400)

    frame = await engine.synthesize(TEXT).collect()

    assert frame.sample_rate == OPENAI_RATE
    assert frame.duration == pytest.approx(openai_stub.speech.seconds, abs=0.02)
    [speech] = speech_requests(openai_stub)
    assert speech["input"] == TEXT
    assert speech["model"] == "gpt-4o-mini-tts" and speech["voice"] == "ash"
    assert speech["response_format"] == "pcm"
    assert openai_stub.requests_to("/audio/speech")[0].authorization == f"Bearer {OPENAI_KEY}"
    # The adapter probes Uplift in the background; the probe succeeds, so Uplift is back.
    await asyncio.wait_for(recovered.wait(), timeout=30)
    assert changes == [False, True]
    assert uplift.texts() == [TEXT, TEXT]  # the failed request (not retried) and the probe


async def test_a_transient_uplift_error_is_retried_once_before_falling_back(
    both, uplift: UpliftStubServer, openai_stub: OpenAIStubServer, closing
) -> None:
    engine = closing(build_tts(both()))
    _, recovered = availability_log(engine)
    uplift.fail_next(2, message="Internal server error")

    frame = await engine.synthesize(TEXT).collect()

    assert frame.duration == pytest.approx(openai_stub.speech.seconds, abs=0.02)
    assert len(speech_requests(openai_stub)) == 1
    await asyncio.wait_for(recovered.wait(), timeout=30)
    assert uplift.texts() == [TEXT, TEXT, TEXT]  # first try, one retry, then the probe


async def test_an_unreachable_uplift_falls_back_to_openai_tts(
    both, openai_stub: OpenAIStubServer, closing
) -> None:
    engine = closing(build_tts(both(upliftai_base_url=f"http://127.0.0.1:{free_port()}")))

    frame = await engine.synthesize(TEXT).collect()

    assert frame.sample_rate == OPENAI_RATE
    assert frame.duration == pytest.approx(openai_stub.speech.seconds, abs=0.02)
    assert [r["input"] for r in speech_requests(openai_stub)] == [TEXT]


async def test_a_refused_uplift_key_falls_back_to_openai_tts(
    both, uplift: UpliftStubServer, openai_stub: OpenAIStubServer, closing
) -> None:
    engine = closing(build_tts(both(upliftai_api_key="sk_api_revoked")))

    frame = await engine.synthesize(TEXT).collect()

    assert frame.duration == pytest.approx(openai_stub.speech.seconds, abs=0.02)
    assert uplift.requests == []
    assert {"token": "sk_api_revoked"} in uplift.connects


async def test_streamed_speech_falls_back_to_openai_tts_sentence_by_sentence(
    both, uplift: UpliftStubServer, openai_stub: OpenAIStubServer, closing
) -> None:
    # AgentSession speaks through stream(), so this is the path a live call takes.
    engine = closing(build_tts(both()))
    uplift.fail_next(message="Invalid voice id", code=400)
    first = "This is the first sentence of the reply."
    second = "And here is a second one that follows it."

    frame = await collect_stream(engine.stream(), f"{first} {second}")

    assert frame.sample_rate == OPENAI_RATE
    assert [r["input"] for r in speech_requests(openai_stub)] == [first, second]
    assert frame.duration == pytest.approx(2 * openai_stub.speech.seconds, abs=0.04)


# --- choosing the provider -----------------------------------------------------------------------


async def test_without_an_uplift_key_openai_tts_is_chosen(
    make_settings, openai_stub: OpenAIStubServer, caplog, closing
) -> None:
    caplog.set_level(logging.INFO, logger="uplift_tts")
    settings = make_settings(openai_api_key=OPENAI_KEY, openai_base_url=openai_stub.base_url)

    engine = closing(build_tts(settings))
    frame = await engine.synthesize(TEXT).collect()

    assert isinstance(engine, lk_openai.TTS)
    assert frame.sample_rate == OPENAI_RATE
    assert [r["input"] for r in speech_requests(openai_stub)] == [TEXT]
    assert "TTS: OpenAI TTS (UPLIFTAI_API_KEY is not set), no fallback configured" in caplog.text


async def test_the_choice_and_its_reason_are_logged_without_any_key(both, caplog, closing) -> None:
    caplog.set_level(logging.DEBUG, logger="uplift_tts")

    closing(build_tts(both()))

    assert "TTS: Uplift AI (UPLIFTAI_API_KEY is set), falling back to OpenAI TTS" in caplog.text
    for record in caplog.records:
        logged = record.getMessage() + repr(record.__dict__)
        assert UPLIFT_KEY not in logged and OPENAI_KEY not in logged


async def test_tts_provider_openai_puts_openai_first_and_keeps_uplift_as_fallback(
    both, uplift: UpliftStubServer, openai_stub: OpenAIStubServer, closing
) -> None:
    engine = closing(build_tts(both(tts_provider="openai")))

    frame = await engine.synthesize(TEXT).collect()

    assert isinstance(engine, tts.FallbackAdapter)
    assert [type(t) for t in engine._tts_instances] == [lk_openai.TTS, UpliftTTS]
    assert frame.duration == pytest.approx(openai_stub.speech.seconds, abs=0.02)
    assert uplift.requests == []


async def test_a_shared_http_client_carries_openai_tts_and_stays_open(
    make_settings, openai_stub: OpenAIStubServer
) -> None:
    settings = make_settings(openai_api_key=OPENAI_KEY, openai_base_url=openai_stub.base_url)
    seen: list[str] = []

    async def record(request: httpx.Request) -> None:
        seen.append(request.url.path)

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as shared:
        engine = build_tts(settings, http_session=shared)
        frame = await engine.synthesize(TEXT).collect()
        await engine.aclose()

        assert frame.sample_rate == OPENAI_RATE
        assert seen == ["/v1/audio/speech"]
        assert not shared.is_closed
        auth = {"Authorization": f"Bearer {OPENAI_KEY}"}
        response = await shared.get(f"{openai_stub.base_url}/models", headers=auth)
        assert response.status_code == 200
