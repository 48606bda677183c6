"""The OpenAI stub, driven through the real `openai` SDK and the real livekit OpenAI plugins."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import numpy as np
import openai
import pytest
from livekit import rtc
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from tests.support.openai_server import OpenAIStubServer
from tests.support.speech import speak

pytestmark = pytest.mark.integration


@pytest.fixture
async def srv() -> AsyncIterator[OpenAIStubServer]:
    async with OpenAIStubServer() as server:
        yield server


@pytest.fixture
async def client(srv: OpenAIStubServer) -> AsyncIterator[AsyncOpenAI]:
    c = AsyncOpenAI(base_url=srv.base_url, api_key="sk-test", max_retries=0)
    yield c
    await c.close()


async def test_streamed_chat_reply_arrives_in_pieces_then_usage(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    srv.chat_script = ["Nice to meet you, Sam."]
    stream = await client.chat.completions.create(
        model="stub-model",
        messages=[{"role": "user", "content": "I am Sam"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == "Nice to meet you, Sam."
    assert len([p for p in pieces if p]) > 1
    assert finish == "stop"
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    (request,) = srv.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.authorization == "Bearer sk-test"
    assert request.json["messages"] == [{"role": "user", "content": "I am Sam"}]
    assert request.json["stream"] is True


async def test_non_streamed_chat_returns_the_scripted_text(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    srv.chat_script = ["first", "second"]
    replies = []
    for _ in range(2):
        completion = await client.chat.completions.create(
            model="stub-model", messages=[{"role": "user", "content": "hi"}]
        )
        replies.append(completion.choices[0].message.content)
        assert completion.choices[0].finish_reason == "stop"
    assert replies == ["first", "second"]


async def test_empty_script_falls_back_to_the_default_responder(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    echoed = await client.chat.completions.create(
        model="stub-model",
        messages=[{"role": "system", "content": "be kind"}, {"role": "user", "content": "ping"}],
    )
    srv.default_chat = lambda body: f"{len(body['messages'])} messages"
    counted = await client.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "x"}]
    )
    assert echoed.choices[0].message.content == "ping"
    assert counted.choices[0].message.content == "1 messages"


async def test_callable_script_sees_the_request_body(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    srv.chat_script = lambda body: body["model"].upper()
    completion = await client.chat.completions.create(
        model="mini", messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content == "MINI"


async def test_tool_call_step_becomes_a_parsed_tool_call(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    srv.chat_script = [{"tool": "save_memory", "args": {"key": "pet", "value": "a cat"}}]
    completion = await client.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "I have a cat"}]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "save_memory"
    assert json.loads(call.function.arguments) == {"key": "pet", "value": "a cat"}
    assert call.id.startswith("call_")


async def test_several_tool_calls_stream_with_arguments_split_across_chunks(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    srv.chat_script = [{"tools": [{"tool": "a", "args": {"x": 1}}, {"tool": "b", "args": {}}]}]
    stream = await client.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "go"}], stream=True
    )
    calls: dict[int, dict[str, str]] = {}
    argument_chunks = 0
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                if tc.function and tc.function.name:
                    entry["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    entry["arguments"] += tc.function.arguments
                    argument_chunks += 1
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["a", "b"]
    assert json.loads(calls[0]["arguments"]) == {"x": 1}
    assert json.loads(calls[1]["arguments"]) == {}
    assert argument_chunks > len(calls)


async def test_json_step_answers_json_mode_callers(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    srv.chat_script = [{"json": {"mood": "calm", "score": 0.5}}]
    completion = await client.chat.completions.create(
        model="stub-model",
        messages=[{"role": "user", "content": "rate it"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"mood": "calm", "score": 0.5}
    assert srv.requests[0].json["response_format"] == {"type": "json_object"}


async def test_sdk_default_base64_embeddings_match_the_float_ones(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    texts = ["my dog loves the park", "the dog park", "quarterly tax forms"]
    b64 = await client.embeddings.create(model="text-embedding-3-small", input=texts, dimensions=64)
    floats = await client.embeddings.create(
        model="text-embedding-3-small", input=texts, dimensions=64, encoding_format="float"
    )
    assert srv.requests[0].json["encoding_format"] == "base64"
    assert srv.requests[0].json["dimensions"] == 64
    assert srv.requests[1].json["encoding_format"] == "float"
    a = np.array([d.embedding for d in b64.data], dtype=np.float32)
    b = np.array([d.embedding for d in floats.data], dtype=np.float32)
    assert a.shape == (3, 64)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert a[0] @ a[1] > a[0] @ a[2]
    assert b64.usage.total_tokens > 0


async def test_embeddings_default_to_the_model_size_and_embed_fn_replaces_them(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    full = await client.embeddings.create(model="text-embedding-3-small", input="hello")
    srv.embed_fn = lambda text, dims: [float(len(text))] + [0.0] * (dims - 1)
    custom = await client.embeddings.create(model="m", input="four", dimensions=8)
    assert len(full.data[0].embedding) == 1536
    assert custom.data[0].embedding == [4.0] + [0.0] * 7


async def test_rate_limit_then_success_is_retried_by_the_sdk(srv: OpenAIStubServer) -> None:
    srv.fail_next(2, status=429, retry_after=0.01)
    async with AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=2) as retrying:
        result = await retrying.embeddings.create(model="text-embedding-3-small", input="x")
    assert len(result.data) == 1
    assert [r.status for r in srv.requests] == [429, 429, 200]
    assert srv.requests[0].path == "/v1/embeddings"


async def test_error_envelope_becomes_a_rate_limit_error(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    srv.fail_next(1, status=429, message="slow down")
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(
            model="stub-model", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "requests"
    assert "slow down" in caught.value.message
    assert len(srv.requests) == 1


async def test_faults_only_hit_their_path_prefix_and_run_out(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    srv.fail_next(1, status=503, path_prefix="/embeddings")
    chat = await client.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "ok"}]
    )
    with pytest.raises(openai.InternalServerError) as caught:
        await client.embeddings.create(model="text-embedding-3-small", input="x")
    again = await client.embeddings.create(model="text-embedding-3-small", input="x")
    assert chat.choices[0].message.content == "ok"
    assert caught.value.status_code == 503
    assert len(again.data) == 1


async def test_persistent_server_errors_exhaust_the_sdk_retries(srv: OpenAIStubServer) -> None:
    srv.fail_next(10, status=500, retry_after=0.01)
    async with AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=2) as retrying:
        with pytest.raises(openai.InternalServerError):
            await retrying.embeddings.create(model="text-embedding-3-small", input="x")
    assert [r.status for r in srv.requests] == [500, 500, 500]


async def test_a_hung_request_times_out_in_the_client(srv: OpenAIStubServer) -> None:
    srv.hang_next(1, seconds=30, path_prefix="/v1/embeddings")
    async with AsyncOpenAI(
        base_url=srv.base_url, api_key="k", max_retries=0, timeout=0.3
    ) as impatient:
        with pytest.raises(openai.APITimeoutError):
            await impatient.embeddings.create(model="text-embedding-3-small", input="x")
        after = await impatient.embeddings.create(model="text-embedding-3-small", input="x")
    assert len(after.data) == 1


async def test_delay_applies_only_to_its_path(srv: OpenAIStubServer) -> None:
    srv.delay_s["/v1/embeddings"] = 30
    async with AsyncOpenAI(
        base_url=srv.base_url, api_key="k", max_retries=0, timeout=0.3
    ) as impatient:
        with pytest.raises(openai.APITimeoutError):
            await impatient.embeddings.create(model="text-embedding-3-small", input="x")
    async with AsyncOpenAI(base_url=srv.base_url, api_key="k", max_retries=0) as patient:
        models = await patient.models.list()
    assert "stub-model" in [m.id for m in models.data]


async def test_each_request_records_the_time_the_server_spent_before_answering(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    srv.delay_s["/v1/chat"] = 0.2  # time the server spends before its first byte
    srv.chat_script = ["Hello there, Sam."]
    stream = await client.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    async for _ in stream:
        pass
    await client.models.list()
    streamed, listed = srv.requests
    assert streamed.first_byte_at is not None and streamed.answered_at is not None
    assert streamed.received_at + 0.2 <= streamed.first_byte_at <= streamed.answered_at
    # A plain response is built by the handler, then sent.
    assert listed.first_byte_at is not None and listed.answered_at is not None
    assert streamed.answered_at <= listed.received_at <= listed.answered_at <= listed.first_byte_at


async def test_wrong_api_key_is_refused_when_one_is_required(srv: OpenAIStubServer) -> None:
    srv.api_key = "right"
    async with AsyncOpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
    async with AsyncOpenAI(base_url=srv.base_url, api_key="right", max_retries=0) as good:
        await good.models.list()
    assert [r.status for r in srv.requests] == [401, 200]


async def test_speech_returns_raw_pcm_tone_at_24khz(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    response = await client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="ash", input="hello", response_format="pcm"
    )
    audio = np.frombuffer(response.content, dtype="<i2")
    assert len(audio) == int(24_000 * srv.speech.seconds)
    assert np.abs(audio).max() > 1000
    assert srv.requests[0].json["voice"] == "ash"


def wav_of(pcm: bytes, sample_rate: int = 16_000) -> bytes:
    return rtc.AudioFrame(pcm, sample_rate, 1, len(pcm) // 2).to_wav_bytes()


async def test_transcription_returns_the_configured_transcript(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    srv.transcriptions.transcript = "remember my sister is called Ana"
    wav = wav_of(bytes(3_200))
    result = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("a.wav", wav, "audio/wav")
    )
    assert result.text == "remember my sister is called Ana"
    form = srv.requests[0].form or {}
    assert form["model"] == "gpt-4o-mini-transcribe"
    assert form["file"] == {"filename": "a.wav", "size": len(wav)}
    [heard] = srv.transcriptions.heard
    assert (heard.sample_rate, heard.channels, heard.duration) == (16_000, 1, 0.1)


async def test_transcription_refuses_what_is_not_a_wav_file(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError, match="Invalid file format"):
        await client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe", file=("a.wav", b"RIFF0000WAVE", "audio/wav")
        )


async def test_transcription_answers_the_registered_utterance_the_audio_holds(
    srv: OpenAIStubServer, client: AsyncOpenAI
) -> None:
    dog = await speak("My dog's name is Rex.", sample_rate=16_000)
    other = await speak("What is my dog called?", sample_rate=16_000)
    srv.transcriptions.register(dog, other)
    srv.transcriptions.max_extra_s = 1.0
    silence = bytes(2 * 8_000)  # half a second, as a VAD keeps around speech

    result = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("a.wav", wav_of(silence + dog.voiced + silence))
    )

    assert result.text == dog.text
    # Too much around it, a sample missing, or another rate: not that utterance.
    for pcm, rate in ((silence * 3 + dog.voiced, 16_000), (dog.voiced[2:], 16_000),
                      (dog.resampled(24_000).voiced, 24_000)):
        with pytest.raises(openai.BadRequestError, match="matches 0 registered utterances"):
            await client.audio.transcriptions.create(
                model="gpt-4o-mini-transcribe", file=("a.wav", wav_of(pcm, rate))
            )
    assert [h.text for h in srv.transcriptions.heard] == [dog.text, None, None, None]


async def test_livekit_openai_tts_decodes_the_stub_speech(srv: OpenAIStubServer) -> None:
    from livekit.plugins import openai as lk_openai

    tts = lk_openai.TTS(base_url=srv.base_url, api_key="k")
    try:
        frames = [ev.frame async for ev in tts.synthesize("Hello there")]
    finally:
        await tts.aclose()
    samples = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in frames])
    assert {f.sample_rate for f in frames} == {24_000}
    assert len(samples) > 0.8 * 24_000 * srv.speech.seconds
    assert np.abs(samples).max() > 1000
    body = srv.requests_to("/audio/speech")[0].json
    assert body["response_format"] == "mp3"
    assert body["input"] == "Hello there"


async def test_livekit_openai_llm_streams_text_and_tool_calls(srv: OpenAIStubServer) -> None:
    from livekit.agents import function_tool, llm
    from livekit.plugins import openai as lk_openai

    @function_tool
    async def save_memory(key: str, value: str) -> str:
        """Save a fact.

        Args:
            key: short name of the fact
            value: the fact
        """
        return "saved"

    srv.chat_script = ["Sure thing.", {"tool": "save_memory", "args": {"key": "k", "value": "v"}}]
    model = lk_openai.LLM(model="stub-model", base_url=srv.base_url, api_key="k")
    ctx = llm.ChatContext.empty()
    ctx.add_message(role="user", content="hello")
    try:
        text = ""
        async with model.chat(chat_ctx=ctx, tools=[save_memory]) as stream:
            async for chunk in stream:
                text += (chunk.delta.content or "") if chunk.delta else ""
        calls = []
        async with model.chat(chat_ctx=ctx, tools=[save_memory]) as stream:
            async for chunk in stream:
                calls += (chunk.delta.tool_calls or []) if chunk.delta else []
    finally:
        await model.aclose()
    assert text == "Sure thing."
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("save_memory", {"key": "k", "value": "v"})
    ]
    body = srv.requests_to("/chat/completions")[0].json
    assert body["tools"][0]["function"]["name"] == "save_memory"
    assert body["stream_options"] == {"include_usage": True}
