"""Whether a text mentions a value: the word rule a forget uses on text derived from it.

The distinctive words of a value are its words (letters only, compared lower-case) of
`MIN_WORD_CHARS` or more letters that are not in `STOPWORDS`. A sentence (text up to `.`, `!`,
`?`, `;` or a line break, or a " / " between quoted turns) mentions the value when it contains
one of them as a whole word. Wide on purpose: a sentence that only shares a word with the value
counts as a mention.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MIN_WORD_CHARS = 3
# Words of three letters or more that say nothing about any one value.
STOPWORDS = frozenset("""
the and but for nor not yet are was were has have had been being will would can could
should shall may might must does did doing done with without from into onto about above
below over under after before than then that this these those there their theirs them they
you your yours she her hers his him its our ours who whom whose which what when where why how
all any both each few more most other some such only own same too very just also again once
here out off per via yes one ones like likes liked user users person people said says
told tells talked talk talks call calls called named name names
""".split())
_WORD = re.compile(r"[^\W\d_]+")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?;])\s+|\s*\n+\s*|\s+/\s+")


def distinctive_words(values: Iterable[str]) -> frozenset[str]:
    """The words of `values` a mention of them would use (module docstring)."""
    return frozenset(
        word
        for value in values
        for word in (w.lower() for w in _WORD.findall(value))
        if len(word) >= MIN_WORD_CHARS and word not in STOPWORDS
    )


def mentions(text: str, words: frozenset[str]) -> bool:
    return any(w.lower() in words for w in _WORD.findall(text))


def without_mentions(text: str, words: frozenset[str]) -> str | None:
    """`text` without its sentences that mention one of `words`; None when none is left."""
    kept = [s for s in _SENTENCE_BREAK.split(text) if s.strip() and not mentions(s, words)]
    return " ".join(kept) or None
