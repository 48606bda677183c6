from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import AccessDenied, InvalidIdentity, InvalidInput
from core.validators import WriteGuard, clean_category, clean_text, parse_user_id

pytestmark = pytest.mark.unit


@given(st.uuids(version=4))
def test_every_random_uuid_is_accepted(value: uuid.UUID) -> None:
    assert parse_user_id(str(value)) == value
    assert parse_user_id(str(value).upper()) == value


@given(st.text(max_size=60))
def test_arbitrary_text_is_either_a_canonical_uuid_or_refused_clearly(raw: str) -> None:
    try:
        parsed = parse_user_id(raw)
    except InvalidIdentity as err:
        assert err.suggestion
    else:
        assert str(parsed) == raw.strip().lower()


@pytest.mark.parametrize("raw", ["", "   ", "mock_user", "123",
                                 "{12345678-1234-5678-1234-567812345678}",
                                 "urn:uuid:12345678-1234-5678-1234-567812345678", None, 42])
def test_malformed_identities_are_refused(raw: object) -> None:
    with pytest.raises(InvalidIdentity):
        parse_user_id(raw)


@pytest.mark.parametrize(
    "raw",
    ["00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
     "ffffffff-ffff-ffff-ffff-ffffffffffff", "11111111-1111-1111-1111-111111111111",
     "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-0000ffffffff",
     "ffffffff-ffff-ffff-ffff-fffffffffffe"],
)
def test_placeholder_uuids_are_refused_as_user_ids_with_a_clear_error(raw: str) -> None:
    for value in (raw, uuid.UUID(raw)):
        with pytest.raises(InvalidIdentity) as caught:
            parse_user_id(value, what="participant identity")
        assert str(caught.value).startswith(f"participant identity {raw.lower()} is refused")
        assert "token server issued" in caught.value.suggestion


def test_ids_just_past_the_placeholder_ranges_are_accepted() -> None:
    for value in (uuid.UUID(int=1 << 32), uuid.UUID(int=(1 << 128) - 1 - (1 << 32))):
        assert parse_user_id(str(value)) == value


@given(st.text(max_size=300))
def test_clean_text_never_returns_control_characters_or_unencodable_text(raw: str) -> None:
    out = clean_text(raw, field="message", max_chars=1_000)
    out.encode("utf-8")
    assert not any(ord(c) < 32 and c not in "\t\n" for c in out)


def test_invalid_utf8_bytes_are_replaced_not_raised() -> None:
    assert clean_text(b"caf\xe9 ok", field="message", max_chars=50) == "caf\ufffd ok"


def test_too_long_text_is_an_error_or_a_truncation_as_asked() -> None:
    with pytest.raises(InvalidInput, match="limit is 10"):
        clean_text("x" * 11, field="value", max_chars=10)
    assert clean_text("x" * 11, field="value", max_chars=10, truncate=True) == "x" * 10


def test_categories_are_normalized_and_checked() -> None:
    assert clean_category("preference") == "PREFERENCE"
    assert clean_category("life event") == "LIFE_EVENT"
    with pytest.raises(InvalidInput):
        clean_category("drop table;")


def test_write_guard_refuses_other_users_and_companions() -> None:
    me, other, comp = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    guard = WriteGuard(user_id=me, companion_id=comp)
    guard.check(me, comp)
    guard.check(me, None)
    with pytest.raises(AccessDenied):
        guard.check(other, comp)
    with pytest.raises(AccessDenied):
        guard.check(me, uuid.uuid4())
