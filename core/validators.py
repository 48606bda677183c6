"""Validation of identities and text at the edges, and the guard that pins writes to one user."""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass

from core.errors import AccessDenied, InvalidIdentity, InvalidInput

MAX_UTTERANCE_CHARS = 4_000
MAX_MEMORY_KEY_CHARS = 120
MAX_MEMORY_VALUE_CHARS = 2_000
MAX_CATEGORY_CHARS = 40

# C0/C1 control characters except tab and newline; they corrupt logs and prompts.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CATEGORY_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


# A person's id is a random value issued by the token server. The nil and max UUIDs, a
# digit repeated, or a small counter next to either end are what defaults and sentinels look
# like ("no user", "admin", a fixture): everyone such a value reached would share one memory.
_COUNTER_SPAN = 1 << 32
_MAX_UUID_INT = (1 << 128) - 1


def placeholder_reason(value: uuid.UUID) -> str | None:
    """Why `value` is a placeholder rather than an issued id, or None when it is not one."""
    digits = value.hex
    if len(set(digits)) == 1:
        return f"every digit is {digits[0]} (a placeholder such as the nil or max UUID)"
    if value.int < _COUNTER_SPAN or value.int > _MAX_UUID_INT - _COUNTER_SPAN:
        return "it is a counter next to the nil or max UUID, not a random id"
    return None


def parse_user_id(raw: object, *, what: str = "user id") -> uuid.UUID:
    """Return `raw` as a UUID or raise `InvalidIdentity` saying what a valid one looks like."""
    if isinstance(raw, uuid.UUID):
        return _issued(raw, what)
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidIdentity(
            f"missing {what}",
            suggestion="connect with a participant identity that is a UUID issued by the "
            "token server",
        )
    text = raw.strip()
    try:
        value = uuid.UUID(text)
    except ValueError:
        shown = text[:40] + ("..." if len(text) > 40 else "")
        raise InvalidIdentity(
            f"{what} {shown!r} is not a valid UUID",
            suggestion="use a UUID such as 123e4567-e89b-42d3-a456-426614174000",
        ) from None
    # uuid.UUID also accepts forms like '{...}' or 'urn:uuid:...'; only the canonical one is an id.
    if str(value) != text.lower():
        raise InvalidIdentity(
            f"{what} {text!r} is not in canonical UUID form",
            suggestion=f"send it as {value}",
        )
    return _issued(value, what)


def _issued(value: uuid.UUID, what: str) -> uuid.UUID:
    reason = placeholder_reason(value)
    if reason is not None:
        raise InvalidIdentity(
            f"{what} {value} is refused: {reason}",
            suggestion="use the random UUID the token server issued for this person",
        )
    return value


def clean_text(raw: object, *, field: str, max_chars: int, truncate: bool = False) -> str:
    """Normalize text: NFC, no control characters, trimmed; too long is an error or truncated."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        raise InvalidInput(f"{field} must be text", suggestion=f"send {field} as a string")
    # Lone surrogates cannot be encoded to UTF-8 and would fail deep inside the driver.
    text = raw.encode("utf-8", errors="replace").decode("utf-8")
    text = unicodedata.normalize("NFC", text)
    text = _CONTROL_CHARS.sub(" ", text).strip()
    if len(text) > max_chars:
        if not truncate:
            raise InvalidInput(
                f"{field} is {len(text)} characters long; the limit is {max_chars}",
                suggestion=f"shorten {field} to at most {max_chars} characters",
            )
        text = text[:max_chars].rstrip()
    return text


def check_utterance(text: str) -> str:
    """A user turn as it is stored, or `InvalidInput` when it is over `MAX_UTTERANCE_CHARS`.

    Typed and spoken turns share this limit. A longer turn is never cut to fit: the person is
    told and asked to split it. The length is checked before anything else looks at the text.
    """
    if len(text) > MAX_UTTERANCE_CHARS:
        raise _too_long(len(text))
    try:
        return clean_text(text, field="turn", max_chars=MAX_UTTERANCE_CHARS)
    except InvalidInput:
        # Normalization lengthened it past the limit (a few characters decompose under NFC).
        raise _too_long(len(text)) from None


def _too_long(length: int) -> InvalidInput:
    return InvalidInput(
        f"the message is {length} characters long; the limit is {MAX_UTTERANCE_CHARS}",
        suggestion="split it into shorter messages",
    )


def clean_category(raw: object) -> str:
    """Categories are upper-case identifiers (FACT, PREFERENCE, ...); any such name is allowed."""
    text = clean_text(raw, field="category", max_chars=MAX_CATEGORY_CHARS).upper().replace(" ", "_")
    if not _CATEGORY_RE.match(text):
        raise InvalidInput(
            f"category {text!r} is not a valid name",
            suggestion="use a word such as FACT, PREFERENCE, PERSON, EVENT, GOAL or BOUNDARY",
        )
    return text


@dataclass(frozen=True)
class WriteGuard:
    """Bound to one session's user (and companion); every write path asks it first.

    A tool call can only ever reach the user the session was opened for: the guard compares
    the id a write targets with the id the session was created with, and refuses otherwise.
    """

    user_id: uuid.UUID
    companion_id: uuid.UUID | None = None

    def check(self, user_id: uuid.UUID, companion_id: uuid.UUID | None = None) -> None:
        if user_id != self.user_id:
            raise AccessDenied(
                "this session may not write for another user",
                suggestion="tools act only for the person in this conversation",
            )
        if self.companion_id is not None and companion_id not in (None, self.companion_id):
            raise AccessDenied(
                "this session may not write for another companion",
                suggestion="memories belong to the companion of this conversation",
            )
