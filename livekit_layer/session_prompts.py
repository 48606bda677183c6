"""What a companion session tells the model up front: its standing instructions and a resumed
conversation's recent turns (the first words' instructions are `services.people.greeting`).

Pure functions over the session's data; `CompanionSession` calls them with its own state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from livekit.agents import llm

from core.prompts import quote_memory, render
from services.memory.profile_service import profile_line
from services.people.companion_service import Companion
from services.people.conversation_service import Turn
from services.people.user_service import UserProfile

# Logged turn roles that go back into the chat context as they are.
CHAT_ROLES: dict[str, Literal["user", "assistant"]] = {"user": "user", "assistant": "assistant"}
# Companion.response_length -> how long its replies are, in the words of the instructions.
REPLY_LENGTHS = {
    "short": "brief, usually one to three short sentences, like a friend on a call",
    "medium": "usually three to five sentences; shorter for small talk",
    "long": "as long as the topic deserves, up to a few spoken paragraphs; short for small talk",
}
# Primary BCP 47 subtags -> names the model reads best; any other code is given as it is.
LANGUAGE_NAMES = {
    "ar": "Arabic", "bn": "Bengali", "de": "German", "en": "English", "es": "Spanish",
    "fa": "Persian", "fr": "French", "hi": "Hindi", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "nl": "Dutch", "pa": "Punjabi", "pl": "Polish", "pt": "Portuguese",
    "ru": "Russian", "sd": "Sindhi", "sv": "Swedish", "tr": "Turkish", "uk": "Ukrainian",
    "ur": "Urdu", "zh": "Chinese",
}
CHARACTER_PHRASES = {
    "friend": "a close friend",
    "partner": "a loving partner",
    "mentor": "a wise mentor",
    "parent": "a caring parent figure",
    "sibling": "a sibling",
    "child": "a curious, cheerful child",
}


def language_name(code: str) -> str:
    """How the instructions name a BCP 47 language: "Urdu", "Portuguese (pt-BR)", or the
    code itself when it is not one of LANGUAGE_NAMES ("the language with code fil")."""
    name = LANGUAGE_NAMES.get(code.split("-")[0].lower())
    if name is None:
        return f"the language with code {code}"
    return name if "-" not in code else f"{name} ({code})"


def companion_instructions(companion: Companion, profile: UserProfile, onboarding: str) -> str:
    """The companion's standing instructions: persona, language, reply length, what it knows,
    onboarding."""
    persona = companion.persona.strip()
    character = CHARACTER_PHRASES.get(companion.character, f"the user's {companion.character}")
    return render(
        "companion",
        companion=companion.name,
        character_phrase=character,
        persona=persona,
        language=language_name(companion.language),
        reply_length=REPLY_LENGTHS[companion.response_length],
        profile_line=quote_memory(
            profile_line(profile) or "Nothing yet: this may be your first talk."
        ),
        onboarding=onboarding,
    )


def history_chat_ctx(history: Sequence[Turn], opening_turn: str | None) -> llm.ChatContext:
    """A resumed session's recent turns, so the model continues the same conversation, and
    the turn that called this companion by name, if one did."""
    chat_ctx = llm.ChatContext.empty()
    for turn in history:
        role = CHAT_ROLES.get(turn.role)
        if role is not None:
            chat_ctx.add_message(role=role, content=turn.text)
    if opening_turn is not None:
        chat_ctx.add_message(role="user", content=opening_turn)
    return chat_ctx
