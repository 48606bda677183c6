from __future__ import annotations

import logging
from typing import Any

import pytest

from core.config import DEFAULT_DEV_USER_ID, SUPABASE_KEYS, EmbeddingProvider, load_settings
from core.errors import ConfigError

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # Settings read the process environment and ./.env; isolate both.
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "REDIS_URL",
                 "EMBEDDING_PROVIDER", "EMBEDDING_DIMENSIONS", "DEV_USER_ID", "LOG_LEVEL",
                 *SUPABASE_KEYS):
        monkeypatch.delenv(name, raising=False)


def test_defaults_need_no_environment_and_use_the_embedded_services() -> None:
    settings = load_settings()
    assert settings.database_url is None
    assert settings.redis_url is None
    assert settings.embedding_provider is EmbeddingProvider.LOCAL
    assert settings.dev_user_id == DEFAULT_DEV_USER_ID
    assert not settings.has_llm_credentials


def test_a_wrong_database_url_names_the_variable_and_what_to_set(monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@localhost/app")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "DATABASE_URL" in str(err.value)
    assert "postgresql://" in str(err.value)


def test_a_secret_in_a_bad_value_is_not_echoed(monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root:hunter2@localhost/app")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "hunter2" not in str(err.value)


def test_a_dev_user_id_that_is_not_a_uuid_fails_at_start(monkeypatch) -> None:
    monkeypatch.setenv("DEV_USER_ID", "alice")
    with pytest.raises(ConfigError, match="DEV_USER_ID"):
        load_settings()


def test_local_embeddings_with_another_dimension_say_what_to_set(monkeypatch) -> None:
    monkeypatch.setenv("EMBEDDING_DIMENSIONS", "1536")
    with pytest.raises(ConfigError, match="EMBEDDING_DIMENSIONS=384"):
        load_settings()


def test_an_unknown_key_in_dotenv_is_reported_by_name(tmp_path) -> None:
    (tmp_path / ".env").write_text("OPENAI_APIKEY=sk-typo\n")
    with pytest.raises(ConfigError, match="OPENAI_APIKEY"):
        load_settings()


def test_openai_base_url_alone_counts_as_llm_credentials(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    settings = load_settings()
    assert settings.has_llm_credentials
    assert settings.llm_api_key()  # a placeholder the SDK accepts for keyless local servers


def test_an_invalid_url_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", "localhost")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings()


def test_every_setting_is_documented_in_env_example_with_a_comment() -> None:
    from core.config import PROJECT_ROOT, Settings

    lines = (PROJECT_ROOT / ".env.example").read_text().splitlines()
    documented = {}
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            documented[line.split("=", 1)[0]] = lines[i - 1].startswith("# ")
    missing = [n.upper() for n in Settings.model_fields if n.upper() not in documented]
    uncommented = [k for k, has_comment in documented.items() if not has_comment]
    assert missing == [] and uncommented == []


def test_env_example_as_dotenv_parses_to_the_defaults(tmp_path) -> None:
    from core.config import PROJECT_ROOT

    (tmp_path / ".env").write_text((PROJECT_ROOT / ".env.example").read_text())
    settings = load_settings()
    assert settings.database_url is None and settings.dev_user_id == DEFAULT_DEV_USER_ID


def test_the_redis_password_never_shows_in_the_settings_repr(monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0")
    settings = load_settings()
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2" not in shown
    assert settings.redis_url is not None
    assert settings.redis_url.get_secret_value() == "redis://:hunter2@127.0.0.1:6379/0"


def test_a_malformed_redis_url_is_refused_without_echoing_it(monkeypatch) -> None:
    monkeypatch.setenv("REDIS_URL", "hunter2@127.0.0.1")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "REDIS_URL" in str(err.value) and "redis://" in str(err.value)
    assert "hunter2" not in str(err.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("redis_url", "hunter2@cache"), ("openai_base_url", "hunter2"),
     ("database_url", "mysql://root:hunter2@db/app"), ("redis_url", 12345)],
)
def test_settings_built_in_code_never_quote_a_bad_value_in_their_error(
    field: str, value: Any
) -> None:
    from pydantic import ValidationError

    from core.config import Settings

    with pytest.raises(ValidationError) as err:
        Settings(_env_file=None, **{field: value})
    assert field in str(err.value)
    assert "hunter2" not in str(err.value) and "12345" not in str(err.value)


@pytest.mark.parametrize(
    "placeholder",
    ["00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
     "00000000-0000-0000-0000-000000000001"],
)
def test_a_placeholder_dev_user_id_is_refused_at_start(monkeypatch, placeholder: str) -> None:
    monkeypatch.setenv("DEV_USER_ID", placeholder)
    with pytest.raises(ConfigError, match="DEV_USER_ID must be a random UUID"):
        load_settings()


def test_a_supabase_url_without_database_url_stops_and_says_which_string_to_copy(
    monkeypatch,
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://abcd.supabase.co")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "SUPABASE_URL is set but DATABASE_URL is not" in message
    assert "Project Settings > Database > Connection string" in message
    assert "pooler URI" in message and "into DATABASE_URL" in message


def test_supabase_keys_in_dotenv_without_database_url_are_named_and_not_echoed(tmp_path) -> None:
    (tmp_path / ".env").write_text(
        "SUPABASE_ANON_KEY=anon-secret-value\nSUPABASE_SERVICE_ROLE_KEY=service-secret-value\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "SUPABASE_SERVICE_ROLE_KEY and SUPABASE_ANON_KEY are set" in message
    assert "secret-value" not in message


def test_supabase_keys_next_to_a_database_url_are_ignored_with_a_warning_naming_them(
    monkeypatch, tmp_path, caplog
) -> None:
    (tmp_path / ".env").write_text("SUPABASE_ANON_KEY=anon-secret-value\n")
    monkeypatch.setenv("SUPABASE_URL", "https://abcd.supabase.co")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@aws-0-eu.pooler.supabase.com:6543/db")
    with caplog.at_level(logging.WARNING, logger="core.config"):
        settings = load_settings()
    assert settings.database_url is not None
    [record] = [r for r in caplog.records if r.name == "core.config"]
    assert record.getMessage().startswith("SUPABASE_URL, SUPABASE_ANON_KEY ignored")
    assert "secret-value" not in record.getMessage()
    assert "supabase_url" not in type(settings).model_fields


def test_empty_supabase_keys_as_in_an_old_env_example_change_nothing(tmp_path, caplog) -> None:
    (tmp_path / ".env").write_text("SUPABASE_URL=\nSUPABASE_ANON_KEY=\n")
    with caplog.at_level(logging.WARNING, logger="core.config"):
        settings = load_settings()
    assert settings.database_url is None
    assert caplog.records == []
