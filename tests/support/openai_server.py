"""A loopback server that speaks the OpenAI REST wire protocol, for tests.

The real `openai` SDK and the real `livekit.plugins.openai` LLM/TTS/STT run their own code
against it: SSE chat streaming with tool calls, base64 embeddings, speech audio, transcriptions,
error envelopes and retry headers. Replies are scripted; every request is recorded.

    async with OpenAIStubServer() as srv:
        srv.chat_script = ["Hello!", {"tool": "save_memory", "args": {"key": "pet"}}]
        client = AsyncOpenAI(base_url=srv.base_url, api_key="test")

Chat steps (a list consumed in order, or one callable(request_json) -> step used for every call;
list items may themselves be callables):
    "text"                                  a text reply
    {"tool": name, "args": {...}}           one tool call (finish_reason "tool_calls")
    {"tools": [{"tool": .., "args": ..}]}   several tool calls in one reply
    {"json": obj}                           text reply json.dumps(obj) (response_format callers)
When the list is empty, `default_chat(request_json)` answers (by default: echo the last user
message).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from tests.support.openai_audio import SpeechEndpoint, TranscriptionEndpoint, read_form
from tests.support.openai_text import count_tokens, echo_last_user_message, hashed_bag_of_words

ChatStep = Any  # str | dict | Callable[[dict], ChatStep]
EmbedFn = Callable[[str, int], Sequence[float]]

MODEL_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_ERROR_KINDS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", "timeout"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", "server_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
}


@dataclass
class RecordedRequest:
    """One request as the server saw it; `status` is filled in once it has been answered.

    The times (wall clock, `time.time()`) say how long the server itself spent on it, which a
    benchmark subtracts from what a client measured: `received_at` when its handling began,
    `first_byte_at` when the response's headers went out (a streamed reply's just before its
    first chunk), `answered_at` when the handler returned (a streamed reply's after its last
    chunk; any other's just before it is sent, so before `first_byte_at`).
    """

    method: str
    path: str
    headers: dict[str, str]
    query: dict[str, str]
    json: Any = None
    form: dict[str, Any] | None = None
    status: int | None = None
    received_at: float = 0.0
    first_byte_at: float | None = None
    answered_at: float | None = None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


_RECORD = web.RequestKey("record", RecordedRequest)


@dataclass
class _Fault:
    remaining: int
    path_prefix: str | None
    status: int = 500
    retry_after: float | None = None
    message: str | None = None
    hang_s: float = 0.0
    # Only requests whose JSON body it accepts (None: any).
    when: Callable[[Any], bool] | None = None


@dataclass
class _ChatReply:
    text: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class OpenAIStubServer:
    """OpenAI-compatible HTTP server on 127.0.0.1 (a free port) with scripted answers.

    Attributes:
        chat_script: list of chat steps, or a callable(request_json) -> step.
        default_chat: answers chat requests once a list script is empty.
        embed_fn: callable(text, dimensions) -> vector; default `hashed_bag_of_words`.
        speech: /audio/speech (`speech.seconds`, `speech.voice`, `speech.spoken`).
        transcriptions: /audio/transcriptions (`transcript`, `register(utterance)`, `heard`).
        delay_s: path prefix -> seconds added before answering each matching request.
        api_key: when set, requests without `Authorization: Bearer <api_key>` get 401.
        requests: every request received, in order.
    """

    def __init__(
        self,
        *,
        chat_script: list[ChatStep] | Callable[[dict[str, Any]], ChatStep] | None = None,
        default_chat: Callable[[dict[str, Any]], ChatStep] = echo_last_user_message,
        embed_fn: EmbedFn | None = None,
        api_key: str | None = None,
        models: Sequence[str] = ("stub-model", "text-embedding-3-small", "gpt-4o-mini-tts"),
    ) -> None:
        self.chat_script: list[ChatStep] | Callable[[dict[str, Any]], ChatStep] = (
            [] if chat_script is None else chat_script
        )
        self.default_chat = default_chat
        self.embed_fn: EmbedFn = embed_fn or hashed_bag_of_words
        self.speech = SpeechEndpoint()
        self.transcriptions = TranscriptionEndpoint()
        self.delay_s: dict[str, float] = {}
        self.api_key = api_key
        self.models = list(models)
        self.requests: list[RecordedRequest] = []
        self._arrivals = asyncio.Condition()
        self._faults: list[_Fault] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.port: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, port: int = 0) -> OpenAIStubServer:
        """Listen on `port` (0: a free one)."""
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.on_response_prepare.append(_stamp_first_byte)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/audio/speech", self._speech)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/v1/models/{model}", self._model)
        self._closing = asyncio.Event()
        # A short shutdown: held (hung) requests are released by `_closing`, not awaited.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OpenAIStubServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("OpenAIStubServer is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # --- test controls -------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        path_prefix: str | None = None,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `n` matching requests with an OpenAI error envelope.

        `retry_after` (seconds, fractions allowed) is sent as `retry-after-ms` and `retry-after`,
        which the SDK honours instead of its own backoff.
        """
        self._faults.append(_Fault(n, path_prefix, status, retry_after, message))

    def hang_next(
        self,
        n: int = 1,
        seconds: float = 30.0,
        *,
        path_prefix: str | None = None,
        when: Callable[[Any], bool] | None = None,
    ) -> None:
        """Hold the next `n` matching requests for `seconds` before answering normally;
        with `when`, only requests whose JSON body it accepts match."""
        self._faults.append(_Fault(n, path_prefix, hang_s=seconds, when=when))

    def requests_to(self, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.requests if _matches(r.path, path_prefix)]

    async def received(self, path_prefix: str, count: int = 1) -> list[RecordedRequest]:
        """Wait until `count` matching requests have arrived (answered or still held)."""
        async with self._arrivals:
            await self._arrivals.wait_for(lambda: len(self.requests_to(path_prefix)) >= count)
        return self.requests_to(path_prefix)

    def reset(self) -> None:
        self.requests.clear()
        self._faults.clear()
        self.delay_s.clear()

    # --- plumbing ---------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            query=dict(request.query),
            received_at=time.time(),
        )
        if request.content_type == "application/json" and request.can_read_body:
            try:
                record.json = await request.json()
            except json.JSONDecodeError:
                record.json = None
        self.requests.append(record)
        async with self._arrivals:
            self._arrivals.notify_all()
        request[_RECORD] = record
        response = await self._answer(request, handler, record)
        record.status = response.status
        record.answered_at = time.time()
        return response

    async def _answer(
        self, request: web.Request, handler: Any, record: RecordedRequest
    ) -> web.StreamResponse:
        for prefix, seconds in self.delay_s.items():
            if _matches(request.path, prefix):
                await self._pause(seconds)
        hang = self._take_fault(request.path, hang=True, body=record.json)
        if hang is not None:
            await self._pause(hang.hang_s)
        fault = self._take_fault(request.path, hang=False, body=record.json)
        if fault is not None:
            headers = {}
            if fault.retry_after is not None:
                headers["retry-after-ms"] = str(int(fault.retry_after * 1000))
                headers["retry-after"] = f"{fault.retry_after:g}"
            return _error(fault.status, fault.message or f"injected {fault.status}", headers)
        if self.api_key is not None and record.authorization != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)
        except TimeoutError:
            pass

    def _take_fault(self, path: str, *, hang: bool, body: Any) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and (fault.hang_s > 0) == hang and (
                fault.path_prefix is None or _matches(path, fault.path_prefix)
            ) and (fault.when is None or fault.when(body)):
                fault.remaining -= 1
                return fault
        return None

    # --- chat ------------------------------------------------------------------------------------

    def _next_step(self, body: dict[str, Any]) -> ChatStep:
        script = self.chat_script
        if callable(script):
            step = script(body)
        elif script:
            step = script.pop(0)
        else:
            step = self.default_chat(body)
        while callable(step):
            step = step(body)
        return step

    def _reply_for(self, body: dict[str, Any]) -> _ChatReply:
        step = self._next_step(body)
        if isinstance(step, str):
            return _ChatReply(text=step)
        if isinstance(step, dict) and "json" in step:
            return _ChatReply(text=json.dumps(step["json"]))
        if isinstance(step, dict) and ("tool" in step or "tools" in step):
            calls = step["tools"] if "tools" in step else [step]
            return _ChatReply(
                text=step.get("text"),
                tool_calls=[
                    {
                        "id": f"call_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {
                            "name": call["tool"],
                            "arguments": json.dumps(call.get("args", {})),
                        },
                    }
                    for call in calls
                ],
            )
        raise ValueError(f"unknown chat step: {step!r}")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        reply = self._reply_for(body)
        model = body.get("model", "stub-model")
        prompt_tokens = sum(
            count_tokens(json.dumps(m.get("content") or "")) for m in body.get("messages") or []
        )
        completion_tokens = count_tokens(reply.text or "") + 8 * len(reply.tool_calls)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        finish = "tool_calls" if reply.tool_calls else "stop"
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
            if reply.tool_calls:
                message["tool_calls"] = reply.tool_calls
            return web.json_response(
                {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                    ],
                    "usage": usage,
                }
            )

        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": choices,
                **extra,
            }
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")

        def delta(d: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": d, "finish_reason": finish_reason, "logprobs": None}]

        await send(delta({"role": "assistant", "content": ""}))
        for piece in re.findall(r"\S+\s*|\s+", reply.text or ""):
            await send(delta({"content": piece}))
        for index, call in enumerate(reply.tool_calls):
            # Like OpenAI: id and name first, then the arguments in more than one piece.
            args = call["function"]["arguments"]
            half = len(args) // 2
            head = {"name": call["function"]["name"], "arguments": ""}
            first = {"index": index, "id": call["id"], "type": "function", "function": head}
            await send(delta({"tool_calls": [first]}))
            for part in (args[:half], args[half:]):
                more = {"index": index, "function": {"arguments": part}}
                await send(delta({"tool_calls": [more]}))
        await send(delta({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=usage)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    # --- embeddings ---------------------------------------------------------------------------

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        model = body.get("model", "text-embedding-3-small")
        raw = body.get("input")
        if raw is None or raw == [] or raw == "":
            return _error(400, "'input' must be a non-empty string or array")
        if isinstance(raw, str):
            texts = [raw]
        elif raw and isinstance(raw[0], int):  # one pre-tokenized input
            texts = [" ".join(map(str, raw))]
        else:
            texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in raw]
        dimensions = int(body.get("dimensions") or MODEL_DIMENSIONS.get(model, 1536))
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = np.asarray(self.embed_fn(text, dimensions), dtype="<f4")
            payload: Any = (
                base64.b64encode(vector.tobytes()).decode("ascii") if as_base64 else vector.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": payload})
        tokens = sum(count_tokens(t) for t in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    # --- audio ----------------------------------------------------------------------------------

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        return await self.speech.answer(request, await request.json())

    async def _transcriptions(self, request: web.Request) -> web.Response:
        form = await read_form(request)
        # Recorded without the audio itself: the sizes are what the tests compare.
        request[_RECORD].form = {
            k: {n: v for n, v in f.items() if n != "data"} if isinstance(f, dict) else f
            for k, f in form.items()
        }
        return await self.transcriptions.answer(request, form)

    # --- models ----------------------------------------------------------------------------------

    def _model_json(self, model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1700000000, "owned_by": "stub"}

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [self._model_json(m) for m in self.models]}
        )

    async def _model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in self.models:
            return _error(404, f"The model '{model}' does not exist")
        return web.json_response(self._model_json(model))


async def _stamp_first_byte(request: web.Request, response: web.StreamResponse) -> None:
    record = request.get(_RECORD)
    if record is not None and record.first_byte_at is None:
        record.first_byte_at = time.time()


def _matches(path: str, prefix: str) -> bool:
    # Prefixes may be given with or without the /v1 of the base URL.
    return path.startswith(prefix) or path.removeprefix("/v1").startswith(prefix)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    fallback = ("server_error" if status >= 500 else "invalid_request_error", None)
    kind, code = _ERROR_KINDS.get(status, fallback)
    envelope = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(envelope, status=status, headers=headers)
