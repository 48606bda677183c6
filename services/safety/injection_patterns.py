"""The fast local prompt-injection check: text normalization and the curated pattern set.

Attackers hide the same few requests behind tricks: fullwidth or look-alike letters, zero-width
characters, leetspeak ("1gn0r3"), and spaced-out words ("i g n o r e"). `normalize` undoes
those tricks into a few plain views of the text; `PATTERNS` are matched against the views.
Each pattern has a weight; weak signals (a bare "jailbreak", "the admin") only count when
another signal backs them up, so ordinary talk ("I want to forget my ex") is left alone.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class InjectionCategory(str, Enum):
    """What a flagged message tried to do."""

    NONE = "none"
    INSTRUCTION_OVERRIDE = "instruction_override"
    EXFILTRATION = "exfiltration"
    FOREIGN_ID = "foreign_id"
    TOOL_ABUSE = "tool_abuse"


# --- normalization ---------------------------------------------------------------------------

# Longer input is cut before matching: attacks sit near the start of what is said, and the
# cost of matching must stay bounded whatever a client sends.
MAX_INSPECT_CHARS = 8_000

# Invisible characters that are not Unicode "format" (Cf) characters but render as nothing.
_INVISIBLE = {"\u034f", "\u115f", "\u1160", "\u17b4", "\u17b5", "\u3164", "\uffa0"}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Cyrillic and Greek letters that look like Latin ones ("іgnоrе" with Cyrillic і, о, е).
_CONFUSABLES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
        "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j",
        "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g", "ı": "i", "ℓ": "l",
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
        "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "’": "'", "‘": "'", "`": "'",
    }
)
# Leetspeak, applied only inside tokens that also contain letters ("3 cats" stays as it is).
_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a",
         "$": "s", "+": "t", "!": "i"}
_LEET_AMBIGUOUS = {"1": ("i", "l"), "|": ("i", "l")}
_TOKEN = re.compile(r"\S+")
_EDGE_PUNCT = ".,;:?\"'()[]{}<>«»“”"
# "i.g.n.o.r.e", "i-g-n-o-r-e": one letter, one separator, repeated.
_DOTTED = re.compile(r"(?<![\w])(?:[a-z0-9@$][.\-_*·•~+/\\]){3,}[a-z0-9@$](?![\w])")
# "i g n o r e": four or more single letters in a row.
_SPACED = re.compile(r"(?<![\w'])[a-z](?: [a-z](?![\w'])){3,}")
_SENTENCE_END = re.compile(r"[.!?;:]+")
_NOT_WORD = re.compile(r"[^\w'\s.]|_")
_SPACES = re.compile(r"\s+")
_UUID = re.compile(
    r"(?<![0-9a-f])[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}(?![0-9a-f])"
)


@dataclass(frozen=True)
class Views:
    """The forms of one text that patterns are matched against.

    Attributes:
        raw: casefolded, NFKC, invisible characters removed; punctuation kept (role markers,
            `user_id=` arguments).
        words: `raw` with look-alikes, diacritics, leetspeak and spaced-out letters undone,
            punctuation turned into spaces and sentence ends into " . ".
        squashed: only the letters of `words`, when the text spelled words out letter by
            letter (None otherwise: matching across word boundaries misfires on normal text).
        uuids: every UUID written in the text.
    """

    raw: str
    words: str
    squashed: str | None
    uuids: tuple[uuid.UUID, ...]


def _as_text(raw: object) -> str:
    if isinstance(raw, bytes | bytearray):
        text = bytes(raw).decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    else:
        text = str(raw)
    text = text[: MAX_INSPECT_CHARS * 2]
    # Lone surrogates would fail every later step; they carry no meaning.
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _visible(text: str) -> str:
    return "".join(
        ch for ch in text if unicodedata.category(ch) != "Cf" and ch not in _INVISIBLE
    )


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _unleet(token: str, vocabulary: frozenset[str]) -> str:
    core = token.strip(_EDGE_PUNCT)
    if not core or not any(c.isalpha() for c in core):
        return token
    if not any(c in _LEET or c in _LEET_AMBIGUOUS for c in core):
        return token
    base = "".join(_LEET.get(c, c) for c in core)
    slots = [i for i, c in enumerate(base) if c in _LEET_AMBIGUOUS]
    choice = base.replace("1", "i").replace("|", "i")
    if 0 < len(slots) <= 4:
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
    text = _as_text(raw)
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _CONTROL.sub(" ", _visible(text))[:MAX_INSPECT_CHARS]
    uuids: list[uuid.UUID] = []
    for found in _UUID.findall(text):
        parsed = uuid.UUID(found.replace("-", ""))
        if parsed not in uuids:
            uuids.append(parsed)
    plain = unicodedata.normalize("NFC", _strip_marks(text.translate(_CONFUSABLES)))
    # Again: a look-alike with a diacritic ("ӧ") is only mappable once the mark is gone.
    plain = plain.translate(_CONFUSABLES)
    tricked = False

    def undot(match: re.Match[str]) -> str:
        nonlocal tricked
        tricked = True
        return re.sub(r"[.\-_*·•~+/\\]", "", match.group(0))

    plain = _DOTTED.sub(undot, plain)
    plain = _TOKEN.sub(lambda m: _unleet(m.group(0), vocabulary), plain)
    plain = _SENTENCE_END.sub(" . ", plain)
    plain = _SPACES.sub(" ", _NOT_WORD.sub(" ", plain)).strip()

    def unspace(match: re.Match[str]) -> str:
        nonlocal tricked
        tricked = True
        return match.group(0).replace(" ", "")

    words = _SPACED.sub(unspace, plain)
    squashed = re.sub(r"[^a-z]", "", words) if tricked else None
    return Views(raw=text, words=words, squashed=squashed, uuids=tuple(uuids))


# --- patterns --------------------------------------------------------------------------------

Check = Callable[[re.Match[str]], bool]


@dataclass(frozen=True)
class Pattern:
    """One curated signal.

    Attributes:
        name: stable identifier, recorded with incidents ("override.ignore_instructions").
        category: what a match means.
        weight: 0..1; a message is flagged once its combined weight reaches the threshold.
        regex: compiled against `view`.
        view: "words", "raw" or "squashed" (see `Views`).
        check: optional extra test of a match, for what a regex alone says badly.
    """

    name: str
    category: InjectionCategory
    weight: float
    regex: re.Pattern[str]
    view: str = "words"
    check: Check | None = None


OVERRIDE = InjectionCategory.INSTRUCTION_OVERRIDE
EXFIL = InjectionCategory.EXFILTRATION
TOOL = InjectionCategory.TOOL_ABUSE

_VERBS = (
    r"(?:ignore|disregard|forget|override|bypass|skip|discard|abandon|never mind|nevermind|"
    r"stop following|don't follow|dont follow|do not follow|stop obeying)"
)
_FILLERS = (
    r"(?:all|any|every|each|of|the|these|those|my|your|its|previous|previously|prior|above|"
    r"earlier|preceding|initial|original|existing|current|system|safety|old|given|that|you|"
    r"were|have|been|got|in|everything|instructions and|rules and)"
)
_STRONG_NOUNS = (
    r"(?:instructions?|directives?|guidelines?|programming|guardrails?|system prompts?)"
)
_WEAK_NOUNS = r"(?:rules|restrictions?|constraints?|prompts?|training|polic(?:y|ies)|orders)"
_STRONG_DET = {"all", "any", "every", "your", "its", "previous", "previously", "prior", "above",
               "earlier", "preceding", "initial", "original", "system", "safety"}
_POSSESSIVE_DET = _STRONG_DET - {"all", "any", "every"}


def _has_words(allowed: set[str]) -> Check:
    def check(match: re.Match[str]) -> bool:
        return bool(allowed.intersection(match.group(0).split()))

    return check


# Who "other people" are when someone fishes for them.
_OTHERS = (
    r"(?:other (?:users?|people|persons?|humans|customers|clients|callers|accounts?)|"
    r"another (?:user|person|human|customer|client|caller|account)|"
    r"(?:some|any|every|no) ?(?:one|body) else|the other (?:users?|people|person)|"
    r"your other (?:users?|people|friends|clients|customers|humans)|different (?:users?|people)|"
    r"all (?:the |your )?users|users?(?: (?:number |no |id |#)?[0-9a-z][0-9a-z-]*)?|"
    r"(?:everyone|people) (?:else )?you (?:talk|speak|chat)\w* (?:to|with))"
)
_TOLD = (
    r"(?:tell|tells|told|say|says|said|share|shares|shared|mention|mentions|mentioned|confide|"
    r"confides|confided|talk|talks|talked|ask|asks|asked|reveal|reveals|revealed|admit|admitted)"
)
_REQUEST = (
    r"(?:read|show|tell|give|list|reveal|dump|print|repeat|export|share|send|access|open|load|"
    r"fetch|retrieve|search|look up|recall|pull up|what are|what's in|what is in)"
)
# Where a command to the companion starts: the text or a sentence, maybe after a greeting.
_OPENER = r"(?:^|\. )(?:(?:hey|hi|hello|ok|okay|so|and|now|then|also|listen|look) )*"
# A request addressed to the companion, not a verb in a story ("people share secrets").
_ASK = (
    rf"(?:(?:{_OPENER}|please |pls |can you |could you |would you |will you |you should |"
    r"you must |you will |i want you to |i need you to |i'd like you to |go ahead and |just )"
    rf"(?:please )?{_REQUEST}(?: me| us)?|i (?:want|need|would like|'d like|wanna) to (?:see|"
    r"read|know|hear|access|get)|let me (?:see|read|hear|access))"
)
_PRIVATE_NOUNS = (
    r"(?:memories|memory|conversations?|chats?|chat logs?|secrets?|messages|transcripts?|data|"
    r"profiles?|records|private \w+)"
)
_EVERYONE = (
    r"(?:every ?(?:one|body|user|account|person)|each user|all (?:the )?(?:users|accounts|people)|"
    r"other (?:users?|accounts)|another (?:user|account)|(?:some|any) ?(?:one|body) else|"
    r"user (?:number |no |id |#)?[0-9a-z][0-9a-z-]*)(?!')"
)
_MODES = r"(?:developer|dev|dan|god|admin|sudo|debug|unrestricted|jailbreak|unfiltered|evil)"


def _p(
    name: str,
    category: InjectionCategory,
    weight: float,
    regex: str,
    view: str = "words",
    check: Check | None = None,
) -> Pattern:
    return Pattern(name, category, weight, re.compile(regex), view, check)


PATTERNS: tuple[Pattern, ...] = (
    # Instruction override.
    _p("override.ignore_instructions", OVERRIDE, 0.9,
       rf"\b{_VERBS} (?:{_FILLERS} ){{0,6}}{_STRONG_NOUNS}\b", check=_has_words(_STRONG_DET)),
    _p("override.ignore_rules", OVERRIDE, 0.8,
       rf"\b{_VERBS} (?:{_FILLERS} ){{0,6}}{_WEAK_NOUNS}\b", check=_has_words(_POSSESSIVE_DET)),
    _p("override.forget_everything_above", OVERRIDE, 0.75,
       rf"\b{_VERBS} (?:everything|anything|all) (?:above|you were told|you've been told|"
       r"you have been told|in your (?:prompt|instructions)|(?:they|your \w+) told you)\b"),
    _p("override.role_switch", OVERRIDE, 0.8,
       r"\byou(?: are|'re|re| r) now (?:an? |the |in |my )?(?:dan\b|unrestricted|unfiltered|"
       r"uncensored|jailbroken|evil|free (?:from|of)|no longer|not (?:bound|restricted|an? "
       r"(?:ai|assistant))|developer mode|admin|root|sudo|god mode|a different (?:ai|assistant|"
       r"model)|(?:ai|assistant|model|chatbot|bot|llm) (?:without|with no|that|who)|\w+gpt\b)"),
    _p("override.you_are_now", OVERRIDE, 0.3, r"\byou(?: are|'re|re| r) now\b"),
    _p("override.from_now_on", OVERRIDE, 0.75,
       r"\bfrom now on(?: \.)? you (?:are|will|must|shall|have to) (?:be )?(?:dan\b|unrestricted|"
       r"unfiltered|uncensored|ignore|not follow|answer without|have no (?:rules|restrictions|"
       r"filters|limits)|respond without|obey me|obey only)"),
    _p("override.pretend_unrestricted", OVERRIDE, 0.75,
       r"\b(?:pretend|imagine|act|behave|roleplay|role play)\b(?: \w+){0,4} you\b(?: [\w']+)"
       r"{0,5} (?:no|without|free of|free from|unbound by|not bound by|ignor\w*) (?:any )?"
       r"(?:rules|restrictions|filters|guidelines|censorship|guardrails|content polic\w*|"
       r"safety \w+)\b"),
    _p("override.act_as_unrestricted", OVERRIDE, 0.8,
       r"\b(?:act|behave|respond|answer) as (?:an? )?(?:dan\b|unrestricted|unfiltered|"
       r"uncensored|jailbroken|evil (?:ai|assistant|bot))"),
    _p("override.system_prompt", OVERRIDE, 0.6, r"\bsystem ?prompts?\b"),
    _p("override.prompt_extraction", OVERRIDE, 0.75,
       r"\b(?:reveal|show|print|repeat|output|display|tell|give|share|say|recite|read|list|dump|"
       r"leak|copy|write|what (?:are|is|were|was)|what's)\b(?: \w+){0,4} (?:your|ur|the) "
       r"(?:(?:initial|hidden|original|secret|internal|real|full|exact|underlying|developer|"
       r"system) (?:prompt|instructions|message)|prompt|system message|programming|instructions "
       r"(?:above|verbatim|word for word))\b"),
    _p("override.mode_command", OVERRIDE, 0.75,
       rf"{_OPENER}(?:please )?(?:enable|activate|enter|unlock|switch to|"
       rf"switch into|go into|engage|turn on) (?:the )?{_MODES} mode\b"),
    _p("override.mode_state", OVERRIDE, 0.75,
       rf"\byou(?: are|'re|re| r)(?: now)? in {_MODES} mode\b|\b{_MODES} mode (?:enabled|"
       r"activated|unlocked|engaged)\b"),
    _p("override.mode_mention", OVERRIDE, 0.35,
       r"\b(?:dan|god|jailbreak|unrestricted|unfiltered|developer) mode\b"),
    _p("override.jailbreak", OVERRIDE, 0.75,
       r"\bjailbreak(?:ing)? (?:you|yourself|this (?:ai|assistant|bot|chat|model)|the (?:ai|"
       r"assistant|bot|model))\b|\b(?:this is|here is|here's) a jailbreak\b|\byou(?:'re| are| re"
       r"| have been|'ve been| were) (?:now )?jailbroken\b|\bjailbreak prompt\b"),
    _p("override.jailbreak_mention", OVERRIDE, 0.35, r"\bjailbr(?:eak\w*|oken)\b"),
    _p("override.role_marker", OVERRIDE, 0.7,
       r"<\|?\s*(?:im_start|im_end|system|endoftext)\s*\|?>|\[/?(?:system|inst)\]|"
       r"(?:^|\n)\s*#{2,}\s*(?:system|instructions?|new instructions)\b|"
       r"(?:^|\n)\s*(?:system|developer)\s*:", view="raw"),
    _p("override.new_instructions", OVERRIDE, 0.6,
       rf"{_OPENER}(?:new|updated|revised) (?:instructions|directives|system prompt|rules) \."),
    _p("override.es", OVERRIDE, 0.85,
       r"\b(?:ignora|olvida|descarta)\w* (?:(?:todas|todo|las|tus|sus|de) ){0,3}"
       r"(?:instrucciones|reglas)(?: (?:anteriores|previas))?",
       check=_has_words({"todas", "tus", "sus", "anteriores", "previas"})),
    _p("override.de", OVERRIDE, 0.85,
       r"\b(?:ignorier|vergiss)\w* (?:(?:alle|deine|die|bisherigen|vorherigen|vorigen) ){0,3}"
       r"(?:anweisungen|instruktionen|regeln)",
       check=_has_words({"alle", "deine", "bisherigen", "vorherigen", "vorigen"})),
    _p("override.fr", OVERRIDE, 0.85,
       r"\b(?:ignore|oublie)\w* (?:(?:toutes|tous|les|tes|vos) ){0,3}(?:instructions|consignes|"
       r"regles)(?: (?:precedentes|anterieures))?",
       check=_has_words({"toutes", "tes", "vos", "precedentes", "anterieures"})),
    # Spelled out letter by letter: matched with word boundaries gone.
    _p("override.squashed_instructions", OVERRIDE, 0.85,
       r"(?:ignore|disregard|forget|bypass|override)(?:all|any|your|the|previous|prior|above|"
       r"earlier|of){1,4}(?:instructions?|directives|guidelines|programming|rules|systemprompt)",
       view="squashed"),
    _p("override.squashed_keywords", OVERRIDE, 0.6,
       r"systemprompt|developermode|jailbreak|youarenow(?:dan|unrestricted|unfiltered|"
       r"jailbroken)", view="squashed"),
    _p("exfil.squashed_others", EXFIL, 0.85,
       r"what(?:did|have|has|do)?(?:other(?:users?|people)|anotheruser|someoneelse|anyoneelse)"
       r"\w{0,40}?(?:tell|told|say|said|share|shared)(?:to|with)?you", view="squashed"),
    # Exfiltration of other people's words.
    _p("exfil.what_others_said", EXFIL, 0.85,
       rf"\bwhat\b(?: (?!do\b|does\b)[\w']+){{0,2}}? {_OTHERS}\b(?: [\w']+){{0,8}}? {_TOLD}\b"
       r"(?: \w+){0,3}? (?:you|to you|with you)\b"),
    _p("exfil.things_others_said", EXFIL, 0.85,
       rf"\b(?:everything|anything|something|all|stuff|secrets|things) (?:that )?{_OTHERS} "
       rf"(?:has |have |had |ever )?{_TOLD}\b(?: \w+){{0,2}}? (?:you|to you|with you)\b"),
    _p("exfil.did_others_tell", EXFIL, 0.6,
       rf"\b(?:did|has|have|does) {_OTHERS} (?:ever )?{_TOLD} (?:to |with )?you\b"),
    _p("exfil.others_data", EXFIL, 0.85,
       rf"{_ASK}\b(?: [\w']+){{0,5}}? {_PRIVATE_NOUNS} (?:of|from|about|for|belonging to|"
       rf"by|with) {_OTHERS}(?!\w)"),
    _p("exfil.others_possessive", EXFIL, 0.85,
       rf"{_ASK}\b(?: [\w']+){{0,4}}? (?:other (?:users?|people|persons?)|another (?:user|"
       r"person)|(?:some|any|every) ?(?:one|body)(?: else)?|all users|user [0-9a-z-]+)"
       rf"(?:'s|s'|s)? {_PRIVATE_NOUNS}\b"),
    _p("exfil.impersonate", EXFIL, 0.8,
       r"\b(?:i am|i'm|im|this is) (?:actually |really |now )?(?:user (?:number |no |id |#)?"
       r"[0-9a-z][0-9a-z-]*|your (?:developer|creator|admin|administrator|owner|programmer|"
       r"operator|maker))\b|\b(?:log|sign) (?:me )?in as\b|\bswitch (?:me )?(?:to|into) (?:user|"
       r"another user|another account|the account of)\b|\baccess (?:the )?account of\b"),
    _p("exfil.claims_authority", EXFIL, 0.45,
       r"\b(?:i am|i'm|im) (?:the|an?) (?:admin|administrator|developer|system|operator)\b"),
    _p("exfil.list_users", EXFIL, 0.8,
       r"\b(?:list|name|show|give)(?: me)? (?:all )?(?:(?:the|your) )?(?:other )?(?:users|people "
       r"you (?:talk|speak|chat)\w* (?:to|with))\b|\bhow many (?:other )?users do you have\b"),
    _p("exfil.who_else", EXFIL, 0.4,
       r"\bwho (?:else )?(?:do|did|are|have) you (?:talk|talking|talked|speak|speaking|chat|"
       r"chatting)\w* (?:to|with)\b"),
    # Tool abuse: aiming the companion's tools at people other than the speaker.
    _p("tool.for_everyone", TOOL, 0.85,
       rf"\b(?:call|run|use|invoke|execute|trigger|fire|apply|do)\b(?: [\w']+){{0,3}}? (?:tool|"
       rf"function|command|action)s?\b(?: [\w']+){{0,5}}? (?:for|on|against|to|with|across|over) "
       rf"(?:the )?{_EVERYONE}"),
    _p("tool.bulk_destroy", TOOL, 0.8,
       rf"\b(?:forget|delete|erase|wipe|remove|clear|purge|drop|reset|export|dump|leak)\b"
       r"(?: [\w']+){0,3}? (?:memories|memory|data|accounts?|profiles?|database|tables?|"
       rf"everything)\b(?: [\w']+){{0,3}}? (?:of|for|from|belonging to|about|across) "
       rf"(?:the )?{_EVERYONE}"),
    _p("tool.tool_on_everyone", TOOL, 0.8,
       rf"\b(?:forget|remember|recall|update_profile|update profile|what_do_you_know_about_me)"
       rf"\b(?: [\w']+){{0,3}}? (?:for|on|against|as) (?:the )?{_EVERYONE}"),
    _p("tool.id_argument", TOOL, 0.8,
       r"\b(?:user|companion|owner|account|session)_id\s*(?:=|:=|=>|:)\s*\S|"
       r"\b(?:user|companion|owner|account)id\s*=\s*\S", view="raw"),
    _p("tool.set_id", TOOL, 0.8,
       r"\b(?:set|change|use|switch|pass)(?: the| your| my)? (?:user|companion|owner|account) ?id "
       r"(?:to|as|=)\b"),
)

# Words the patterns spell out; leetspeak is read toward them ("4ll" -> "all").
VOCABULARY: frozenset[str] = frozenset(
    word for p in PATTERNS for word in re.findall(r"[a-z]{2,}", p.regex.pattern)
)
