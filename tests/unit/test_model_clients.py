"""The model-server clients: a missing LLM setting is a clear, non-retryable LLM error; TLS is
verified with the context prewarm built."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.errors import LLMUnavailable, StorageUnavailable
from infrastructure.model_clients import ModelClients, tls_context

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


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTPS server with its own self-signed certificate: (url, certificate)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = http.server.HTTPServer(("127.0.0.1", 0), Answer)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/", cert
    server.shutdown()
    server.server_close()


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


async def test_the_clients_verify_tls_with_the_context_prewarm_built(
    make_settings, https_server: tuple[str, Path]
) -> None:
    url, cert = https_server
    trusting = tls_context()
    trusting.load_verify_locations(cert)  # this context, and only it, trusts the server
    models = ModelClients.create(make_settings(), tls=trusting)
    default = ModelClients.create(make_settings())
    try:
        assert (await models.http.get(url)).text == "ok"
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await default.http.get(url)
    finally:
        await models.aclose()
        await default.aclose()
