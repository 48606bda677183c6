"""The forms of one text that the injection patterns are matched against.

Attackers hide the same few requests behind tricks: fullwidth or look-alike letters, zero-width
characters, leetspeak ("1gn0r3"), and spaced-out words ("i g n o r e"). `normalize` undoes
those tricks into a few plain views of the text, in time linear in its length: every step is a
C-level translation or a regex that starts only at a token boundary and never backtracks over
more than one token, so a whole turn is screened however long it is.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
import uuid
from dataclasses import dataclass

# Unicode "format" (Cf) characters render as nothing; so do these few others. Spelled out rather
# than computed at import: a unit test checks the class against the running unicodedata.
FORMAT_CHARS = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_INVISIBLE = re.compile(f"[{FORMAT_CHARS}\u034f\u115f\u1160\u17b4\u17b5\u3164\uffa0]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Combining marks of the Latin, Greek and Cyrillic letters the patterns spell ("ïgnörë").
_MARKS = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")
# Cyrillic and Greek letters that look like Latin ones ("іgnоrе" with Cyrillic і, о, е).
_CONFUSABLES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
        "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j",
        "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ı": "i", "ℓ": "l",
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
        "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "’": "'", "‘": "'", "`": "'",
        "ʼ": "'", "´": "'",
    }
)
# Leetspeak, read only inside tokens that also contain letters ("3 cats" stays as it is).
_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a",
         "$": "s", "+": "t", "!": "i"}
_LEET_AMBIGUOUS = {"1": ("i", "l"), "|": ("i", "l")}
_MAX_AMBIGUOUS = 4
# A token (whitespace-delimited) holding a leet character; it starts only at a token start.
_LEET_TOKEN = re.compile(r"(?<!\S)[^\s0-9@$+!|]*[0-9@$+!|]\S*")
_EDGE_PUNCT = ".,;:?\"'()[]{}<>«»“”"
# "i.g.n.o.r.e", "i-g-n-o-r-e": one letter, one separator, repeated. Starts only where no
# letter or separator precedes, so each run is scanned once.
_SEPARATORS = r".\-_*·•~+/\\"
_DOTTED = re.compile(
    rf"(?<![\w{_SEPARATORS}])(?:[a-z0-9@$][{_SEPARATORS}]){{3,}}[a-z0-9@$](?![\w])"
)
_SEPARATOR = re.compile(rf"[{_SEPARATORS}]")
# "i g n o r e": four or more single letters in a row.
_SPACED = re.compile(r"(?<![\w'])[a-z](?: [a-z](?![\w'])){3,}")
_SENTENCE_END = re.compile(r"[.!?;:]+")
# An apostrophe inside or at the end of a word stays ("don't", "d'un", "users'"); one opening
# a word is a quotation mark, and a quoted phrase is read like any other.
_NOT_WORD = re.compile(r"[^\w'\s.]|_|(?<![\w])'")
_SPACES = re.compile(r"\s+")
_NOT_LETTER = re.compile(r"[^a-z]+")
_UUID = re.compile(
    r"(?<![0-9a-f])[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}(?![0-9a-f])"
)
# A UUID in the `words` view is this token plus a letter naming its index in `Views.uuids`.
UUID_TOKEN = "uuidref"
_MAX_UUID_TOKENS = 26


@dataclass(frozen=True)
class Views:
    """The forms of one text that patterns are matched against.

    Attributes:
        raw: NFKC, casefolded, look-alikes and diacritics undone (`plain`), invisible
            characters removed, control characters as spaces; punctuation and line breaks
            kept (role markers, `user_id=` arguments). The detector's verdict depends on
            nothing else, so it is also the verdict's cache key.
        words: `raw` with look-alikes, diacritics, leetspeak and spaced-out letters undone,
            punctuation turned into spaces and sentence ends into " . "; each UUID is
            `UUID_TOKEN` plus a letter ("uuidrefa" is `uuids[0]`).
        squashed: only the letters of `words`, when the text spelled words out letter by
            letter (None otherwise: matching across word boundaries misfires on normal text).
        uuids: every UUID written in the text, in order, without repeats.
    """

    raw: str
    words: str
    squashed: str | None
    uuids: tuple[uuid.UUID, ...]


def as_text(raw: object) -> str:
    """Any input as valid text: bytes decoded, other objects as their str()."""
    if isinstance(raw, bytes | bytearray):
        text = bytes(raw).decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        text = str(raw)
    # Lone surrogates would fail every later step; they carry no meaning.
    return text.encode("utf-8", errors="replace").decode("utf-8")


def canonical(raw: object) -> str:
    """The `raw` view alone: what two texts must share to get the same verdict."""
    text = plain(unicodedata.normalize("NFKC", as_text(raw)))
    return _CONTROL.sub(" ", _INVISIBLE.sub("", text))


def plain(text: str) -> str:
    """Lower-case text without look-alikes or diacritics (lexicon words are written so)."""
    text = text.casefold().translate(_CONFUSABLES)
    if not text.isascii():
        text = unicodedata.normalize("NFC", _MARKS.sub("", unicodedata.normalize("NFKD", text)))
        # Again: a look-alike with a diacritic ("ӧ") is only mappable once the mark is gone.
        text = text.translate(_CONFUSABLES)
    return text


def _unleet(match: re.Match[str], vocabulary: frozenset[str]) -> str:
    token = match.group(0)
    core = token.strip(_EDGE_PUNCT)
    if not core or not any(c.isalpha() for c in core):
        return token
    base = "".join(_LEET.get(c, c) for c in core)
    slots = [i for i, c in enumerate(base) if c in _LEET_AMBIGUOUS]
    choice = base.replace("1", "i").replace("|", "i")
    if 0 < len(slots) <= _MAX_AMBIGUOUS:
        # "4ll" is "all", "1nstruct10ns" is "instructions": pick the reading that is a word
        # the patterns use, else read 1 as i.
        for letters in itertools.product("il", repeat=len(slots)):
            chars = list(base)
            for slot, letter in zip(slots, letters, strict=True):
                chars[slot] = letter
            candidate = "".join(chars)
            if candidate in vocabulary:
                choice = candidate
                break
    start = token.find(core)
    return token[:start] + choice + token[start + len(core) :]


def normalize(raw: object, vocabulary: frozenset[str] = frozenset()) -> Views:
    """Undo the usual disguises; never raises for any input."""
    text = canonical(raw)
    uuids: list[uuid.UUID] = []

    def uuid_token(match: re.Match[str]) -> str:
        found = uuid.UUID(match.group(0).replace("-", ""))
        if found not in uuids:
            uuids.append(found)
        index = min(uuids.index(found), _MAX_UUID_TOKENS - 1)
        return f" {UUID_TOKEN}{chr(ord('a') + index)} "

    plain_text = _UUID.sub(uuid_token, text)
    tricked = False

    def undot(match: re.Match[str]) -> str:
        nonlocal tricked
        tricked = True
        return _SEPARATOR.sub("", match.group(0))

    plain_text = _DOTTED.sub(undot, plain_text)
    plain_text = _LEET_TOKEN.sub(lambda m: _unleet(m, vocabulary), plain_text)
    plain_text = _SENTENCE_END.sub(" . ", plain_text)
    plain_text = _SPACES.sub(" ", _NOT_WORD.sub(" ", plain_text)).strip()

    def unspace(match: re.Match[str]) -> str:
        nonlocal tricked
        tricked = True
        return match.group(0).replace(" ", "")

    words = _SPACED.sub(unspace, plain_text)
    squashed = _NOT_LETTER.sub("", words) if tricked else None
    return Views(raw=text, words=words, squashed=squashed, uuids=tuple(uuids))
