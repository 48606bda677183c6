"""What every tool call of the companion goes through before and around its one service call:
the session's identity, rate limits, screening of the model's arguments, no silence
nudge while it runs, and errors the model should see turned into `ToolError`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from livekit.agents import RunContext, ToolError

from core.errors import CompanionError, InvalidIdentity
from livekit_layer.companion_session import CompanionSession, SessionUser


@contextmanager
def tool_errors() -> Iterator[None]:
    """Errors the model should see become ToolError with their message and suggestion."""
    try:
        yield
    except CompanionError as err:
        raise ToolError(str(err)) from None


def session_writer(companion: CompanionSession, context: RunContext[Any]) -> SessionUser:
    """The identity writes go to: the session's, and only if it is `companion`'s."""
    user = context.session.userdata
    with tool_errors():
        if not isinstance(user, SessionUser):
            raise InvalidIdentity("this session has no user", suggestion="reconnect")
        companion.guard.check(user.user_id, user.companion_id)
    return user


@asynccontextmanager
async def tool_call(
    companion: CompanionSession, context: RunContext[Any], *, writes: bool = False
) -> AsyncIterator[SessionUser]:
    """Around one tool's service call: check identity, rate limits (`writes`: a memory write),
    screen the model's arguments, hold off silence nudges, map errors to ToolError (the
    memory quota is the save's own check). Yields the identity to act for."""
    user = session_writer(companion, context)
    services = companion.services
    call = context.function_call
    with companion.tool_running(), tool_errors():
        await services.limits.check_tool_call(user.user_id, call.name)
        if writes:
            await services.limits.check_memory_write(user.user_id)
        args = json.loads(call.arguments or "{}")
        verdict = services.security.inspect_tool_args(
            args, user_id=user.user_id, companion_id=user.companion_id
        )
        if verdict.flagged:
            services.security.record_incident(
                user.user_id, user.companion_id, verdict, call.arguments
            )
            raise ToolError(services.security.refusal(verdict))
        yield user
