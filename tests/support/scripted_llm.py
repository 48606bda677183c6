"""An in-process `llm.LLM` whose replies are scripted, for driving an AgentSession in tests.

    llm = ScriptedLLM(["Hi there!", {"tool": "remember", "args": {...}}, "Saved."])

Each chat() call takes the next step; a step is a reply text, a tool call
`{"tool": name, "args": {...}}`, or a callable `(chat_ctx, tools) -> step`. Every chat
context the model was given is kept in `calls`, so tests can read what the model saw.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

from livekit.agents import APIConnectOptions, llm, utils
from livekit.agents.llm import ChatChunk, ChoiceDelta, CompletionUsage, FunctionToolCall
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, NotGivenOr

Step = str | dict[str, Any] | Callable[[llm.ChatContext, list[Any]], Any]


def system_texts(chat_ctx: llm.ChatContext) -> list[str]:
    """Text of every system/developer message in a chat context, in order."""
    return [
        m.text_content or ""
        for m in chat_ctx.messages()
        if m.role in ("system", "developer")
    ]


def all_text(chat_ctx: llm.ChatContext) -> str:
    """Every message's text joined: what the model could read."""
    return "\n".join(m.text_content or "" for m in chat_ctx.messages())


class ScriptedLLM(llm.LLM):
    """Replies from a script; when it runs out, `fallback` answers (default: a fixed text)."""

    def __init__(
        self, steps: list[Step] | None = None, *, fallback: Step = "Okay."
    ) -> None:
        super().__init__()
        self.steps: list[Step] = list(steps or [])
        self.fallback = fallback
        self.calls: list[llm.ChatContext] = []

    @property
    def model(self) -> str:
        return "scripted"

    @property
    def provider(self) -> str:
        return "tests"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[Any] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[Any] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> llm.LLMStream:
        self.calls.append(chat_ctx.copy())
        step: Any = self.steps.pop(0) if self.steps else self.fallback
        while callable(step):
            step = step(chat_ctx, tools or [])
        return _ScriptedStream(
            self, step, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )


class _ScriptedStream(llm.LLMStream):
    def __init__(self, owner: ScriptedLLM, step: Any, **kwargs: Any) -> None:
        super().__init__(owner, **kwargs)
        self._step = step

    async def _run(self) -> None:
        reply_id = utils.shortuuid("scripted_")
        if isinstance(self._step, dict):
            call = FunctionToolCall(
                name=self._step["tool"],
                arguments=json.dumps(self._step.get("args", {})),
                call_id=utils.shortuuid("call_"),
            )
            self._event_ch.send_nowait(
                ChatChunk(id=reply_id, delta=ChoiceDelta(role="assistant", tool_calls=[call]))
            )
        else:
            for piece in re.findall(r"\S+\s*", str(self._step)):
                await asyncio.sleep(0)
                self._event_ch.send_nowait(
                    ChatChunk(id=reply_id, delta=ChoiceDelta(role="assistant", content=piece))
                )
        self._event_ch.send_nowait(
            ChatChunk(
                id=reply_id,
                usage=CompletionUsage(completion_tokens=5, prompt_tokens=10, total_tokens=15),
            )
        )
