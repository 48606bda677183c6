"""The model-server clients: a missing LLM setting is a clear, non-retryable LLM error."""

from __future__ import annotations

import pytest

from core.errors import LLMUnavailable, StorageUnavailable
from infrastructure.model_clients import ModelClients

pytestmark = pytest.mark.unit


async def test_without_an_api_key_or_base_url_the_llm_client_says_which_setting_to_set(
    make_settings,
) -> None:
    models = ModelClients.create(make_settings(openai_api_key=None, openai_base_url=None))
    try:
        with pytest.raises(LLMUnavailable) as caught:
            models.openai  # noqa: B018
        assert not isinstance(caught.value, StorageUnavailable)
        assert caught.value.retryable is False
        assert "OPENAI_API_KEY" in caught.value.suggestion
        assert "OPENAI_BASE_URL" in caught.value.suggestion
        assert models.stats() == {"llm_configured": False, "http_client_open": True}
    finally:
        await models.aclose()
    assert models.stats()["http_client_open"] is False


async def test_a_base_url_alone_configures_the_llm_client_for_a_local_server(
    make_settings,
) -> None:
    models = ModelClients.create(make_settings(openai_base_url="http://127.0.0.1:11434/v1"))
    try:
        client = models.openai
        assert str(client.base_url).rstrip("/") == "http://127.0.0.1:11434/v1"
        assert models.stats()["llm_configured"] is True
    finally:
        await models.aclose()
