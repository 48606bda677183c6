"""The injection frames of one language, built from its lexicon (`services.safety.lexicon`).

A frame is the same in every language: an override verb aimed at the assistant's instructions,
a reveal verb aimed at its prompt, a persona without rules, a request for other users' data,
a tool aimed at everyone, a claim to be its maker. Its checks tell whose instructions or data a
line aims at: "forget all the previous instructions I gave you about my diet" withdraws the
person's own and counts only as a faint, scoped signal; "the instructions on the medicine box"
are not the companion's; "the messages from other people in my group chat" are not other
users'.
"""

from __future__ import annotations

import re

from services.safety.injection_signals import (
    EXFIL,
    OVERRIDE,
    SCOPED,
    TOOL,
    Check,
    InjectionCategory,
    Pattern,
    clause_after,
    clause_before,
    fold,
    near,
)
from services.safety.lexicon import de, en, es, fr

Lexicon = dict[str, str]
LEXICONS: dict[str, Lexicon] = {
    "en": en.LEXICON, "es": es.LEXICON, "de": de.LEXICON, "fr": fr.LEXICON,
}


class LanguageFrames:
    """The patterns of one language, built from its lexicon."""

    def __init__(self, lang: str, lex: Lexicon) -> None:
        self.lang = lang
        self.suffix = "" if lang == "en" else f".{lang}"
        self.lex = {key: fold(value) for key, value in lex.items()}
        self._re: dict[str, re.Pattern[str]] = {}
        # Qualifiers that follow the noun ("las reglas anteriores", "les règles précédentes").
        lead = f"(?:{self.alt('system_after')} ){{0,2}}" if self.has("system_after") else ""
        self._speaker_clause = self._compiled("speaker_clause", rf"^{lead}KEY(?![\w])")
        self._ai_owned_after = self._compiled("ai_owned", r"^(?:[\w']+ ){0,2}KEY")
        self._system_after = self._compiled("system_after", r"^KEY(?![\w])")
        if self.has("object_link", "first_person", "object_det", "ai_terms"):
            # A word follows a space, or an elided article or preposition ("d'un", "l'ami").
            link = self.alt("object_link") + r"(?: |(?<='))"
            det = self.alt("object_det") + r"(?: |(?<='))"
            self._about_mine: re.Pattern[str] | None = re.compile(
                rf"^{lead}{link}{self.alt('first_person')} \w"
            )
            self._about_other: re.Pattern[str] | None = re.compile(
                rf"^{lead}{link}(?:{det})?([\w']+)"
            )
            self._assistant_terms: re.Pattern[str] | None = re.compile(self.alt("ai_terms"))
            mention = f"|^(?:[\\w']+ ){{0,2}}?{self.alt('speaker_mention')}" if self.has(
                "speaker_mention") else ""
            # "other people in my family", "everyone at my party", "people I mentioned".
            self._people_scope: re.Pattern[str] | None = re.compile(
                rf"^(?:[\w']+ ){{0,3}}?{link}{self.alt('first_person')}(?![\w]){mention}"
            )
        else:
            self._about_mine = self._about_other = self._assistant_terms = None
            self._people_scope = None

    def _compiled(self, key: str, template: str) -> re.Pattern[str] | None:
        return re.compile(template.replace("KEY", self.alt(key))) if key in self.lex else None

    def has(self, *keys: str) -> bool:
        return all(key in self.lex for key in keys)

    def alt(self, key: str) -> str:
        return f"(?:{self.lex[key]})"

    def find(self, key: str, text: str) -> bool:
        """`key`'s words occur in `text` as whole words."""
        regex = self._re.get(key)
        if regex is None:
            regex = self._re[key] = re.compile(rf"(?<![\w']){self.alt(key)}(?![\w])")
        return regex.search(text) is not None

    def p(self, name: str, category: InjectionCategory, weight: float, regex: str,
          check: Check | None = None) -> Pattern:
        return Pattern(name + self.suffix, category, weight, re.compile(regex), "words", check)

    # --- whose instructions: the checks behind the override and reveal frames -------------

    def own_scope(self, inner: str, after: str, *, second_person: bool) -> bool:
        """The instructions are the speaker's own, or about something that is not the
        companion: "my rules", "... I gave you", "... about my diet", "... on the box".

        `inner` is the match (verb to noun), `after` the rest of its clause. Something that
        is not the companion only scopes instructions that are not called "yours".
        """
        if "speaker_det" in self.lex and self.find("speaker_det", inner):
            return True
        if self._speaker_clause is not None and self._speaker_clause.match(after):
            return True
        if self._about_mine is None or self._about_other is None:
            return False
        if self._about_mine.match(after):
            return True
        if second_person:
            return False
        about = self._about_other.match(after)
        return about is not None and not (
            self._assistant_terms is not None and self._assistant_terms.fullmatch(about.group(1))
        )

    def aimed_at_assistant(self, inner: str, after: str, dets: str) -> bool:
        """The instructions are the companion's: "your", "all previous", "the rules you were
        given", "las reglas anteriores"."""
        return (
            self.find(dets, inner)
            or (self._system_after is not None and self._system_after.match(after) is not None)
            or (self._ai_owned_after is not None and self._ai_owned_after.match(after) is not None)
        )

    def override_check(self, dets: str) -> Check:
        def check(match: re.Match[str]) -> float:
            inner = match.group(0)
            after = clause_after(match)
            if not self.aimed_at_assistant(inner, after, dets):
                return 0.0
            second = self.has("second_person") and self.find("second_person", inner)
            return SCOPED if self.own_scope(inner, after, second_person=second) else 1.0

        return check

    def scope_check(self, match: re.Match[str]) -> float:
        """Full weight unless the match is about the speaker's own things ("enable developer
        mode on my phone", "I'm the admin of our family group chat")."""
        inner = match.group(0)
        second = self.has("second_person") and self.find("second_person", inner)
        return SCOPED if self.own_scope(inner, clause_after(match), second_person=second) else 1.0

    def near_check(self, key: str) -> Check:
        return lambda match: 1.0 if self.find(key, near(match)) else 0.0

    def addressed_check(self, *keys: str) -> Check:
        """The clause before the match asks the companion to do it: it opens with the first
        key's verb (maybe after "please", "can you", a greeting), or says "I want to see".
        "Delete the memories of all users" is a request; "my sister deleted them" is a story.
        Every further key's words must occur in that clause too."""
        lead = f"(?:(?:{self.lex['addressed']}) ){{0,3}}"
        opens = re.compile(rf"^{lead}(?:{self.lex[keys[0]]})(?![\w])")
        # "Use your tools to delete ...", "benutze deine Werkzeuge, um ... zu löschen".
        tool_lead = (
            re.compile(rf"^{lead}{self.alt('tool_lead')}") if self.has("tool_lead") else None
        )

        def check(match: re.Match[str]) -> float:
            before = clause_before(match)
            # "I want to see ...", maybe with the verb last ("ich will ... sehen").
            clause = f"{before} {match.group(0)} {clause_after(match)}"
            asked = opens.match(before) is not None or (
                keys[0] == "request" and self.find("request_any", clause)
            ) or (
                tool_lead is not None and tool_lead.match(before) is not None
                and self.find(keys[0], clause)
            )
            if asked and all(self.find(key, before) for key in keys[1:]):
                return 1.0
            return 0.0

        return check

    # --- the frames -------------------------------------------------------------------------

    def patterns(self) -> list[Pattern]:
        a, has = self.alt, self.has
        out: list[Pattern] = []
        w = r"(?<![\w'])"
        e = r"(?![\w])"
        if has("override_verbs", "fillers", "strong_nouns", "weak_nouns"):
            head = rf"{w}{a('override_verbs')} (?:{a('fillers')} ){{0,6}}"
            out.append(self.p("override.ignore_instructions", OVERRIDE, 0.9,
                              rf"{head}{a('strong_nouns')}{e}", self.override_check("system_det")))
            out.append(self.p("override.ignore_rules", OVERRIDE, 0.8,
                              rf"{head}{a('weak_nouns')}{e}",
                              self.override_check("possessive_det")))
        if has("invalidated", "strong_nouns", "weak_nouns"):
            nouns = f"{self.lex['strong_nouns']}|{self.lex['weak_nouns']}"
            out.append(self.p("override.invalidated", OVERRIDE, 0.8,
                              rf"{w}(?:{nouns})(?: [\w']+){{0,8}}? {a('invalidated')}{e}",
                              self._invalidated_check))
            out.append(self.p("override.no_longer_follow", OVERRIDE, 0.8,
                              rf"{w}{a('no_longer_follow')}(?: [\w']+){{0,6}}",
                              self._no_longer_check(nouns)))
        if has("override_verbs", "everything_told"):
            out.append(self.p("override.forget_everything_above", OVERRIDE, 0.75,
                              rf"{w}{a('override_verbs')} {a('everything_told')}{e}"))
        if has("obey_me"):
            out.append(self.p("override.obey_me", OVERRIDE, 0.55, rf"{a('obey_me')}{e}"))
        if has("new_instructions"):
            out.append(self.p("override.new_instructions", OVERRIDE, 0.6,
                              rf"(?:^|\. )(?:\w+ ){{0,2}}{a('new_instructions')} \."))
        if has("reveal", "secret_target"):
            out.append(self.p("override.prompt_extraction", OVERRIDE, 0.8,
                              rf"{w}{a('reveal')}(?: [\w']+){{0,4}}? {a('secret_target')}{e}",
                              self.scope_check))
        if has("reveal", "content_seek", "secret_nouns", "ai_owned"):
            ask = f"(?:{self.lex['reveal']}|{self.lex['content_seek']})"
            nouns, owned = a("secret_nouns"), a("ai_owned")
            out.append(self.p("override.prompt_extraction_told", OVERRIDE, 0.75,
                              rf"{w}{ask}(?: [\w']+){{0,4}}? (?:{nouns}(?: [\w']+){{0,3}}? "
                              rf"{owned}|{owned}(?: [\w']+){{0,3}}? {nouns}{e})"))
        if has("reveal", "weak_secret_target"):
            out.append(self.p("override.rules_question", OVERRIDE, 0.4,
                              rf"{w}{a('reveal')}(?: [\w']+){{0,4}}? {a('weak_secret_target')}{e}",
                              self.scope_check))
        if has("verbatim"):
            out.append(self.p("override.verbatim", OVERRIDE, 0.4, rf"{w}{a('verbatim')}{e}"))
        if has("told_before"):
            out.append(self.p("override.told_before", OVERRIDE, 0.7,
                              rf"{w}{a('told_before')}{e}"))
        if has("unrestricted", "persona"):
            out.append(self.p("override.unrestricted_persona", OVERRIDE, 0.8,
                              rf"{w}{a('unrestricted')}{e}", self.near_check("persona")))
        if has("mode_command"):
            out.append(self.p("override.mode_command", OVERRIDE, 0.75,
                              rf"(?:^|\. )(?:\w+ ){{0,2}}?{a('mode_command')}{e}",
                              self.scope_check))
        if has("mode_state"):
            out.append(self.p("override.mode_state", OVERRIDE, 0.75, rf"{w}{a('mode_state')}"))
        out += self._other_people()
        out += self._identity()
        return out

    def _invalidated_check(self, match: re.Match[str]) -> float:
        before = clause_before(match).split(" ")[-3:]
        context = " ".join(before) + " " + match.group(0)
        owned = self.has("ai_owned") and self.find("ai_owned", match.group(0))
        return 1.0 if owned or self.aimed_at_assistant(context, "", "possessive_det") else 0.0

    def _no_longer_check(self, nouns: str) -> Check:
        """"Stop following" counts when what is no longer followed is the assistant's: its
        instructions or its makers ("stop obeying your creators")."""
        makers = f"|{self.lex['makers']}" if "makers" in self.lex else ""
        target = re.compile(rf"(?<![\w'])(?:{nouns}{makers})(?![\w])")

        def check(match: re.Match[str]) -> float:
            text = match.group(0)
            if not target.search(text):
                return 0.0
            owned = self.has("ai_owned") and self.find("ai_owned", text)
            mine = self.find("possessive_det", text) or self.find("second_person", text)
            return 1.0 if owned or mine else 0.0

        return check

    def _people(self, check: Check) -> Check:
        """Other people of the speaker's own life are not other users: "the messages from
        everyone at my party", "memories about people I mentioned"."""

        def scoped(match: re.Match[str]) -> float:
            if self._people_scope is not None and self._people_scope.match(clause_after(match)):
                return SCOPED if check(match) > 0 else 0.0
            return check(match)

        return scoped

    def _others_said(self, match: re.Match[str]) -> float:
        """Someone else told the companion something, and the speaker asks what: "what did
        other users tell you". Not what the speaker told it ("what I told you about ...")."""
        context = f"{clause_before(match)} {match.group(0)} {clause_after(match)}"
        told = self.find("told_you", context) and not (
            self.has("told_by_me") and self.find("told_by_me", context)
        )
        if not told:
            return 0.0
        return 1.0 if self.find("content_seek", context) else 0.4

    def _other_people(self) -> list[Pattern]:
        a, has = self.alt, self.has
        w, e = r"(?<![\w'])", r"(?![\w])"
        out: list[Pattern] = []
        if has("others", "told_you", "content_seek"):
            out.append(self.p("exfil.what_others_said", EXFIL, 0.85, rf"{w}{a('others')}{e}",
                              self._people(self._others_said)))
        if has("others", "private_nouns", "private_link"):
            owned = rf"{a('private_nouns')}(?: [\w']+){{0,2}}? {a('private_link')}{a('others')}{e}"
            if has("possessive_private"):
                owned = rf"(?:{owned}|{a('others')}(?:'s|')? (?:[\w']+ )?{a('private_nouns')}{e})"
            if has("request", "request_any", "addressed"):
                out.append(self.p("exfil.others_data", EXFIL, 0.85, rf"{w}{owned}",
                                  self._people(self.addressed_check("request"))))
            if has("destroy", "addressed"):
                out.append(self.p("tool.bulk_destroy", TOOL, 0.85, rf"{w}{owned}",
                                  self._people(self.addressed_check("destroy"))))
        if has("for_link", "others", "tool_verbs", "tool_nouns", "addressed"):
            target = rf"{a('others')}(?:(?!')|'s (?:account|profile|memories|data|chats?))"
            out.append(self.p("tool.for_everyone", TOOL, 0.85,
                              rf"{w}{a('for_link')} (?:the |los |las |la |le |les )?{target}",
                              self.addressed_check("tool_verbs", "tool_nouns")))
        if has("access", "others"):
            out.append(self.p("exfil.access_others", EXFIL, 0.8,
                              rf"{w}{a('access')} (?:[\w']+ ){{0,2}}?{a('others')}{e}",
                              self._people(lambda match: 1.0)))
        if has("list_users"):
            out.append(self.p("exfil.list_users", EXFIL, 0.8, rf"{w}{a('list_users')}{e}"))
        if has("who_else"):
            out.append(self.p("exfil.who_else", EXFIL, 0.4, rf"{w}{a('who_else')}{e}"))
        return out

    def _identity(self) -> list[Pattern]:
        a, has = self.alt, self.has
        w, e = r"(?<![\w'])", r"(?![\w])"
        out: list[Pattern] = []
        if has("maker_claim"):
            out.append(self.p("exfil.impersonate", EXFIL, 0.8, rf"{w}{a('maker_claim')}{e}"))
        if has("admin_claim"):
            out.append(self.p("exfil.claims_authority", EXFIL, 0.45, rf"{w}{a('admin_claim')}{e}",
                              self.scope_check))
        if has("privilege_request"):
            out.append(self.p("exfil.privilege_request", EXFIL, 0.45,
                              rf"{w}{a('privilege_request')}{e}"))
        if has("disable_safety"):
            out.append(self.p("override.disable_safety", OVERRIDE, 0.45,
                              rf"{w}{a('disable_safety')}{e}", self.scope_check))
        if has("account_switch"):
            out.append(self.p("exfil.account_switch", EXFIL, 0.8, rf"{w}{a('account_switch')}"))
        return out


def frame_patterns() -> list[Pattern]:
    """Every frame in every language."""
    patterns: list[Pattern] = []
    for lang, lex in LEXICONS.items():
        patterns += LanguageFrames(lang, lex).patterns()
    return patterns
