"""Confirming "forget everything" out loud: single-use codes bound to one session, one person
and a later turn of theirs; and what an LLM call may still read after the erasure.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from livekit.agents import llm

from core.errors import InvalidInput

CODE_TTL_S = 120.0
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # nothing that reads like another character
TOOL_NAME = "forget_everything"


@dataclass(frozen=True)
class _Issued:
    code: str
    user_id: uuid.UUID
    turn: int
    expires_at: float


class ErasureConfirmation:
    """The confirmation codes of one session's "forget everything".

    Args:
        clock: monotonic seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._issued: _Issued | None = None

    def issue(self, user_id: uuid.UUID, turn: int) -> str:
        """A new code for the person's request made in their turn number `turn` (any earlier
        code stops working)."""
        code = "".join(secrets.choice(_ALPHABET) for _ in range(6))
        self._issued = _Issued(code, user_id, turn, self._clock() + CODE_TTL_S)
        return code

    def check(self, user_id: uuid.UUID, turn: int, code: str) -> None:
        """Accept `code` for an erasure now, in the person's turn number `turn`.

        Raises:
            InvalidInput: no such code for this session and person, expired, or the person
                has not answered yet; the suggestion says what to do.
        """
        issued = self._issued
        start_again = (
            f"call {TOOL_NAME} without confirm to get a new code, tell the person what will "
            "be erased and ask them to confirm"
        )
        if issued is None or issued.user_id != user_id or not secrets.compare_digest(
            issued.code, code.strip().upper()
        ):
            raise InvalidInput(
                "that confirmation code is not valid here: a code works once, in the "
                "conversation it was given in", suggestion=start_again,
            )
        if self._clock() > issued.expires_at:
            self._issued = None
            raise InvalidInput(
                f"that confirmation code expired (codes last {CODE_TTL_S:.0f} seconds)",
                suggestion=start_again,
            )
        if turn <= issued.turn:
            raise InvalidInput(
                "the person has not answered yet",
                suggestion="ask them out loud whether everything should be erased and call "
                f"{TOOL_NAME} again only after they say yes",
            )

    def used(self) -> None:
        """The erasure went through: the code is spent."""
        self._issued = None


def before_erasure(chat_ctx: llm.ChatContext, erased_at: float) -> llm.ChatContext:
    """`chat_ctx` without what was said before an erasure at `erased_at` (time.time()): the
    instructions, the calls of this tool (a tool's output needs its call) and everything newer
    stay."""
    items = [
        item for item in chat_ctx.items
        if item.created_at >= erased_at
        or (isinstance(item, llm.ChatMessage) and item.role in ("system", "developer"))
        or item.type not in ("message", "function_call", "function_call_output")
        or getattr(item, "name", None) == TOOL_NAME
    ]
    return chat_ctx if len(items) == len(chat_ctx.items) else llm.ChatContext(items)
