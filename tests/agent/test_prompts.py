"""Prompts are Markdown files read once; placeholders must all be filled."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.prompts import PROMPTS_DIR, prompt, render

pytestmark = pytest.mark.unit


def test_every_prompt_file_renders_with_its_placeholders_filled() -> None:
    import re

    for path in PROMPTS_DIR.glob("*.md"):
        names = set(re.findall(r"\$([a-z_]+)", prompt(path.stem)))
        text = render(path.stem, **{name: f"<{name}>" for name in names})
        assert "$" not in text.replace("$$", ""), path.name


def test_a_missing_placeholder_value_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"\$missing"):
        render("onboarding")


@pytest.mark.parametrize("name", ["../agent", "Companion", "", "a/b"])
def test_only_plain_prompt_names_are_read(name: str) -> None:
    with pytest.raises(ConfigError):
        prompt(name)


def test_an_unknown_prompt_says_which_file_is_missing() -> None:
    with pytest.raises(ConfigError, match="no_such_prompt.md"):
        prompt("no_such_prompt")
