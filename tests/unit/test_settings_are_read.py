"""Every setting is read by the product: a `Settings` field that only tests read is a knob that
does nothing, and a person who sets it is misled."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT, Settings

pytestmark = pytest.mark.unit

PRODUCT = ("agent.py", "uplift_tts.py", "uplift_socket.py", "core", "infrastructure", "services",
           "rag_system", "livekit_layer")
CONFIG_MODULE = PROJECT_ROOT / "core" / "config.py"
VALIDATORS = {"field_validator", "model_validator"}


def product_files() -> list[Path]:
    files: list[Path] = []
    for name in PRODUCT:
        path = PROJECT_ROOT / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def _is_validator(node: ast.AST) -> bool:
    if not isinstance(node, ast.FunctionDef):
        return False
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Name) and target.id in VALIDATORS:
            return True
    return False


def names_read(path: Path, *, is_config: bool) -> set[str]:
    """Attribute names loaded in `path` (`settings.rag_top_k`, `self._settings.x`), and string
    constants (`getattr(settings, "x")`, `model_copy(update={"x": ...})`).

    In core/config.py itself only the properties and helpers count: a validator checking a
    value is not a use of it, nor is the field name a validator is declared for.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped: set[int] = set()
    if is_config:
        for node in ast.walk(tree):
            if _is_validator(node):
                skipped |= {id(child) for child in ast.walk(node)}
    read: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            read.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if not is_config:
                read.add(node.value)
    return read


def test_every_settings_field_is_read_by_production_code() -> None:
    read: set[str] = set()
    for path in product_files():
        read |= names_read(path, is_config=path == CONFIG_MODULE)
    unread = sorted(name.upper() for name in Settings.model_fields if name not in read)
    assert unread == [], (
        f"settings read nowhere outside tests: {unread}; make the product use them or remove "
        "them from core/config.py and .env.example"
    )


def test_the_check_sees_a_field_that_is_only_declared(tmp_path: Path) -> None:
    # The walk above must not count a field's own declaration or validator as a read.
    module = tmp_path / "config.py"
    module.write_text(
        "class S:\n"
        "    knob: int = 1\n"
        "    @field_validator('knob')\n"
        "    def _check(cls, v):\n"
        "        return v.knob\n"
        "def use(s):\n"
        "    return s.other\n"
    )
    outside = names_read(module, is_config=False)
    assert "other" in outside and "knob" in outside  # outside core/config.py strings count
    inside = names_read(module, is_config=True)
    assert "other" in inside and "knob" not in inside
