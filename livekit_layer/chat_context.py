"""Reading and extending the LLM chat context of a companion session.

Pure helpers over livekit's `llm.ChatContext`: which user message a reply answers, the turns
before it, and the one memory message a turn gets.
"""

from __future__ import annotations

from livekit.agents import llm

# The id of a turn's memory message is this prefix plus the user message's id.
MEMORY_ITEM_PREFIX = "memory_context_"


def pending_user_message(chat_ctx: llm.ChatContext) -> llm.ChatMessage | None:
    """The user message the next reply answers: the latest turn, if the user said it."""
    for item in reversed(chat_ctx.items):
        if isinstance(item, llm.ChatMessage) and item.role in ("user", "assistant"):
            return item if item.role == "user" else None
    return None


def latest_user_message(chat_ctx: llm.ChatContext) -> tuple[int, llm.ChatMessage] | None:
    """The latest user message of `chat_ctx` and its index, answered or not."""
    items = chat_ctx.items
    index = next(
        (i for i in range(len(items) - 1, -1, -1)
         if items[i].type == "message" and items[i].role == "user"),  # type: ignore[union-attr]
        None,
    )
    if index is None:
        return None
    return index, items[index]  # type: ignore[return-value]


def recent_texts(chat_ctx: llm.ChatContext, message_id: str, *, limit: int) -> list[str]:
    """The last `limit` user and assistant texts before the latest message, without
    `message_id`'s."""
    return [
        m.text_content or "" for m in chat_ctx.messages()[:-1]
        if m.role in ("user", "assistant") and m.id != message_id
    ][-limit:]


def has_memory_message(chat_ctx: llm.ChatContext, message: llm.ChatMessage) -> bool:
    """Whether `message`'s memory message is in `chat_ctx` already."""
    return chat_ctx.get_by_id(MEMORY_ITEM_PREFIX + message.id) is not None


def with_memory_message(
    chat_ctx: llm.ChatContext, index: int, message: llm.ChatMessage, block: str
) -> llm.ChatContext:
    """A copy of `chat_ctx` with `block` as a system message right after `message` (at
    `index`), dated like it."""
    out = chat_ctx.copy()
    out.items.insert(
        index + 1,
        llm.ChatMessage(
            id=MEMORY_ITEM_PREFIX + message.id, role="system", content=[block],
            created_at=message.created_at,
        ),
    )
    return out


def turn_key(text: str) -> str:
    """The key a turn's text is known by (verdicts, prefetches): spacing and case ignored."""
    return " ".join(text.split()).casefold()
