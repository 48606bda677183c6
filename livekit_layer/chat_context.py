"""Reading and extending the LLM chat context of a companion session.

Pure helpers over livekit's `llm.ChatContext`: which user message a reply answers, the turns
before it, and the one memory note a turn gets. The note quotes remembered text (what the
person once said), so it is a user message, never a system one: nothing a person planted in
an earlier turn comes back with the authority of the companion's instructions.
"""

from __future__ import annotations

from livekit.agents import llm

from core.prompts import quote_memory, render

# The id of a turn's memory note is this prefix plus the user message's id.
MEMORY_ITEM_PREFIX = "memory_context_"
MEMORY_NOTE_PROMPT = "memory_note"


def is_memory_note(item: llm.ChatItem) -> bool:
    return item.id.startswith(MEMORY_ITEM_PREFIX)


def pending_user_message(chat_ctx: llm.ChatContext) -> llm.ChatMessage | None:
    """The user message the next reply answers: the latest turn, if the user said it."""
    for item in reversed(chat_ctx.items):
        if (isinstance(item, llm.ChatMessage) and item.role in ("user", "assistant")
                and not is_memory_note(item)):
            return item if item.role == "user" else None
    return None


def latest_user_message(chat_ctx: llm.ChatContext) -> tuple[int, llm.ChatMessage] | None:
    """The latest user message of `chat_ctx` and its index, answered or not."""
    items = chat_ctx.items
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if isinstance(item, llm.ChatMessage) and item.role == "user" and not is_memory_note(item):
            return index, item
    return None


def recent_texts(chat_ctx: llm.ChatContext, message_id: str, *, limit: int) -> list[str]:
    """The last `limit` user and assistant texts before the latest message, without
    `message_id`'s."""
    return [
        m.text_content or "" for m in chat_ctx.messages()[:-1]
        if m.role in ("user", "assistant") and m.id != message_id and not is_memory_note(m)
    ][-limit:]


def has_memory_message(chat_ctx: llm.ChatContext, message: llm.ChatMessage) -> bool:
    """Whether `message`'s memory note is in `chat_ctx` already."""
    return chat_ctx.get_by_id(MEMORY_ITEM_PREFIX + message.id) is not None


def memory_note(remembered: str | None, mood: str | None) -> str | None:
    """A turn's note: the companion's mood, then what it remembers, quoted (`quote_memory`)
    under a line that says it is background, never instructions. None when both are empty."""
    parts = [mood] if mood else []
    if remembered:
        parts.append(render(MEMORY_NOTE_PROMPT, memory=quote_memory(remembered)))
    return "\n".join(parts) if parts else None


def with_memory_message(
    chat_ctx: llm.ChatContext, index: int, message: llm.ChatMessage, note: str
) -> llm.ChatContext:
    """A copy of `chat_ctx` with `note` as a user-role message right before `message` (at
    `index`), dated like it: the turn being answered stays the last thing the model reads."""
    out = chat_ctx.copy()
    out.items.insert(
        index,
        llm.ChatMessage(
            id=MEMORY_ITEM_PREFIX + message.id, role="user", content=[note],
            created_at=message.created_at,
        ),
    )
    return out


def turn_key(text: str) -> str:
    """The key a turn's text is known by for prefetches and repeated incidents: spacing and
    case ignored. Never for verdicts: the screen sees line breaks (see `SessionScreening`)."""
    return " ".join(text.split()).casefold()
