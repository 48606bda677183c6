"""The job's clients for model servers: one httpx client and one AsyncOpenAI client over it.

The LLM, STT, OpenAI TTS and OpenAI embeddings all talk through them, so one job keeps one
connection pool to its model server. Uplift TTS reuses the httpx client.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import httpx
from openai import AsyncOpenAI

from core.config import EmbeddingProvider, Settings
from core.deadline import Deadline
from core.errors import LLMUnavailable

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
# Less time than this left before a deadline: a model call is not started (it could not
# finish, and it would hold the connection the work after it needs).
MIN_CALL_S = 0.5


def tls_context() -> ssl.SSLContext:
    """What model-server connections verify TLS with: the CA bundle (or SSL_CERT_FILE).

    Reading the bundle takes 50-200 ms on a busy machine, once per client; a job process
    builds it in prewarm, before its job arrives, and hands it to `ModelClients.create`. It
    holds no connection and belongs to no event loop, so it is safe to share.
    """
    return httpx.create_ssl_context()


class ModelClients:
    """Owns the shared httpx client and, when a model server is configured, the OpenAI client.

    Build it with `ModelClients.create(settings)`; `openai` raises `LLMUnavailable` (not
    retryable) when neither OPENAI_API_KEY nor OPENAI_BASE_URL is set.
    """

    def __init__(self, *, http: httpx.AsyncClient, openai: AsyncOpenAI | None) -> None:
        self.http = http
        self._openai = openai

    @classmethod
    def create(cls, settings: Settings, *, tls: ssl.SSLContext | None = None) -> ModelClients:
        """Open the clients; `tls` is the prewarmed `tls_context()` (built here if None)."""
        http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.openai_timeout_s, connect=CONNECT_TIMEOUT_S),
            verify=tls if tls is not None else tls_context(),
        )
        openai_client = None
        if settings.has_llm_credentials or (
            settings.embedding_provider is EmbeddingProvider.OPENAI
        ):
            openai_client = AsyncOpenAI(
                api_key=settings.llm_api_key(),
                base_url=settings.openai_base_url,
                timeout=settings.openai_timeout_s,
                max_retries=settings.openai_max_retries,
                # openai accepts an httpx client as well as an httpx2 one (it checks both at
                # run time); its annotation names only httpx2.
                http_client=http,  # type: ignore[arg-type]
            )
        logger.info("model clients ready (llm_configured=%s)", openai_client is not None)
        return cls(http=http, openai=openai_client)

    @property
    def openai(self) -> AsyncOpenAI:
        """The OpenAI-compatible client (chat, embeddings, STT, TTS)."""
        if self._openai is None:
            raise LLMUnavailable(
                "no OpenAI-compatible model server is configured",
                suggestion="set OPENAI_API_KEY for OpenAI, or OPENAI_BASE_URL for a local "
                "server (e.g. http://127.0.0.1:11434/v1)",
                retryable=False,
            )
        return self._openai

    def openai_until(self, deadline: Deadline | None) -> AsyncOpenAI:
        """The OpenAI client; with `deadline`, one whose requests time out when it passes and
        are not retried (a retry could not finish by then either).

        The SDK's timeout bounds each phase of a request (connect, each read), not the whole
        of it: a caller keeping a deadline also runs the call in `core.deadline.within`.

        Raises:
            LLMUnavailable: no model server is configured, or less than MIN_CALL_S is left.
        """
        client = self.openai
        if deadline is None:
            return client
        left = deadline.remaining()
        if left < MIN_CALL_S:
            raise LLMUnavailable(
                "no time left for a model call before the deadline",
                suggestion="the work is kept for later (the next session or maintenance pass)",
            )
        return client.with_options(timeout=left, max_retries=0)

    def stats(self) -> dict[str, Any]:
        return {
            "llm_configured": self._openai is not None,
            "http_client_open": not self.http.is_closed,
        }

    async def aclose(self) -> None:
        await self.http.aclose()
