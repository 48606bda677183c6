"""Prompts and personas live as Markdown files in prompts/; this reads them once per process."""

from __future__ import annotations

import functools
import re
import unicodedata
from pathlib import Path
from string import Template

from core.config import PROJECT_ROOT
from core.errors import ConfigError

PROMPTS_DIR = PROJECT_ROOT / "prompts"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@functools.cache
def prompt(name: str, directory: Path = PROMPTS_DIR) -> str:
    """The text of `prompts/<name>.md`, without its trailing newline.

    Raises:
        ConfigError: the name is not a plain file name or the file does not exist.
    """
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"prompt name {name!r} is not a plain file name",
            suggestion="use lower-case letters, digits, '-' and '_' only",
        )
    path = directory / f"{name}.md"
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except FileNotFoundError:
        raise ConfigError(
            f"prompt file {path.name} is missing",
            suggestion=f"restore {path} from the repository",
        ) from None


def render(prompt_name: str, /, **values: object) -> str:
    """`prompt(prompt_name)` with `$placeholders` filled in; a missing value is an error."""
    try:
        return Template(prompt(prompt_name)).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise ConfigError(
            f"prompt {prompt_name!r} needs a value for ${exc.args[0]}",
            suggestion="pass every placeholder the prompt file uses",
        ) from None


# Remembered text (what a person once said, notes the companion keeps) reaches the model only
# between these markers, as quoted background; nothing inside can close them or open another.
MEMORY_OPEN = "<memory>"
MEMORY_CLOSE = "</memory>"
# Angle brackets and everything that looks like one become parentheses, so a remembered
# "</memory>" (or "〈/memory〉") reads as "(/memory)"; backticks cannot open a code fence.
_LOOKALIKES = str.maketrans({
    "<": "(", ">": ")", "‹": "(", "›": ")", "〈": "(", "〉": ")", "⟨": "(", "⟩": ")",
    "《": "(", "》": ")", "﹤": "(", "﹥": ")", "˂": "(", "˃": ")", "ᐸ": "(", "ᐳ": ")",
    "«": '"', "»": '"', "`": "'",
})
_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")
_LINE_SPACES = re.compile(r"[^\S\n]+")


def quote_memory(text: str) -> str:
    """`text` between `MEMORY_OPEN` and `MEMORY_CLOSE`, neutralized: no bracket or look-alike
    that could close the block or open a tag, no control or invisible characters."""
    folded = unicodedata.normalize("NFKC", text).translate(_LOOKALIKES)
    visible = "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")
    raw_lines = _CONTROLS.sub(" ", visible).split("\n")
    lines = (_LINE_SPACES.sub(" ", line).strip() for line in raw_lines)
    body = "\n".join(line for line in lines if line)
    return f"{MEMORY_OPEN}\n{body}\n{MEMORY_CLOSE}"
