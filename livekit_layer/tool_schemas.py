"""The agent's typed tools as an LLM request declares them, with their JSON schemas built once.

livekit-agents 1.8.9 turns every typed `@function_tool` into its JSON schema again on each LLM
request (a pydantic model from the signature and docstring, then the strict schema): about
5 ms of CPU for the companion's nine tools, on the event loop, between the end of the person's
turn and the request. A schema depends only on its tool, so `DeclaredTools` builds each one
once, with LiveKit's own builder, and hands the LLM a raw-schema tool that declares exactly the
same thing. Only the request sees these: the framework runs a tool the model calls by looking
its name up among the agent's own tools, never among what the LLM was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from livekit.agents import llm


class DeclaredTools:
    """The tools an LLM request declares: each typed function tool stands in as a raw-schema
    tool holding the schema `livekit.plugins.openai.LLM` sends for it (the strict one, as
    `session_models.build_llm` configures it), built on first use; other tools pass as they are.
    """

    def __init__(self) -> None:
        self._declared: dict[llm.FunctionTool, llm.RawFunctionTool] = {}

    def for_request(self, tools: Sequence[llm.Tool]) -> list[llm.Tool]:
        """`tools` as the request declares them, in the same order."""
        declared: dict[llm.FunctionTool, llm.RawFunctionTool] = {}
        out: list[llm.Tool] = []
        for tool in tools:
            if isinstance(tool, llm.FunctionTool):
                stand_in = self._declared.get(tool) or _declare(tool)
                declared[tool] = stand_in
                out.append(stand_in)
            else:
                out.append(tool)
        # Only the current tools are kept: an agent that changes its tools holds no stale ones.
        self._declared = declared
        return out


def _declare(tool: llm.FunctionTool) -> llm.RawFunctionTool:
    schema = llm.utils.build_strict_openai_schema(tool)["function"]

    async def declared_only(raw_arguments: dict[str, Any]) -> None:
        raise RuntimeError(f"{tool.id} was declared to the LLM only; the agent's tool runs calls")

    return llm.function_tool(declared_only, raw_schema=schema)
