"""The Socket.IO connection to Uplift AI's text-to-speech API, for `uplift_tts.UpliftTTS`.

One connection carries every request of one TTS instance (Uplift tells them apart by
`requestId`). Every failure becomes a livekit `APIError` whose `retryable` says whether trying
again can help: an Uplift `error` message an `APIStatusError` with the status its code or words
suggest, a refused key a non-retryable 401, a dropped connection an `APIConnectionError`, a
silent server an `APITimeoutError`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncGenerator
from contextlib import suppress
from typing import Any

import aiohttp
import socketio  # type: ignore[import-untyped]
from livekit.agents import APIConnectionError, APIError, APIStatusError, APITimeoutError
from livekit.plugins.upliftai.tts import WEBSOCKET_NAMESPACE

logger = logging.getLogger(__name__)


class UpliftSocket:
    """The Socket.IO connection to Uplift: connects lazily, routes `message` events to the
    request they name and turns every failure into a livekit `APIError`."""

    def __init__(self, *, base_url: str, api_key: str) -> None:
        self._base_url = base_url
        self._api_key = api_key
        self._sio: socketio.AsyncClient | None = None
        # Resolved by the server's `ready` message; failed by an error or hang-up before it.
        self._ready: asyncio.Future[None] | None = None
        self._connect_lock = asyncio.Lock()
        self._pending: dict[str, asyncio.Queue[bytes | APIError | None]] = {}

    def _is_open(self) -> bool:
        ready = self._ready
        return (
            self._sio is not None
            and self._sio.connected
            and ready is not None
            and ready.done()
            and not ready.cancelled()
            and ready.exception() is None
        )

    async def connect(self, *, timeout_s: float) -> socketio.AsyncClient:
        async with self._connect_lock:
            if self._is_open():
                assert self._sio is not None
                return self._sio
            await self._drop()
            # reconnection=False: a lost connection is re-made by the next request, on that
            # request's own deadline. handle_sigint=False: the LiveKit worker owns Ctrl+C.
            sio = socketio.AsyncClient(
                reconnection=False, handle_sigint=False, logger=False, engineio_logger=False
            )
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            refusals: list[Any] = []

            # Events from a connection already replaced must not touch the current one.
            async def on_message(data: Any) -> None:
                if sio is self._sio:
                    self._on_message(data, ready)

            async def on_disconnect(reason: Any = None) -> None:
                if sio is self._sio:
                    self._on_disconnect(ready)

            sio.on("message", on_message, namespace=WEBSOCKET_NAMESPACE)
            sio.on("disconnect", on_disconnect, namespace=WEBSOCKET_NAMESPACE)
            sio.on("connect_error", refusals.append, namespace=WEBSOCKET_NAMESPACE)
            self._sio, self._ready = sio, ready
            try:
                async with asyncio.timeout(timeout_s):
                    await sio.connect(
                        self._base_url,
                        auth={"token": self._api_key},
                        namespaces=[WEBSOCKET_NAMESPACE],
                        transports=["websocket"],
                        wait_timeout=timeout_s,
                    )
                    await ready
            except TimeoutError:
                await self._drop()
                raise APITimeoutError("Uplift AI did not accept the connection in time") from None
            except APIError:
                await self._drop()
                raise
            except (socketio.exceptions.ConnectionError, aiohttp.ClientError, OSError):
                refused = bool(sio.failed_namespaces)
                await self._drop()
                # `from None`: the transport's exception may carry the URL and auth payload.
                if refused:
                    raise _refusal_error(refusals[-1] if refusals else None) from None
                raise APIConnectionError("could not connect to Uplift AI") from None
            return sio

    async def audio(
        self, message: dict[str, Any], *, timeout_s: float
    ) -> AsyncGenerator[bytes]:
        """Send one `synthesize` message and yield its audio until `audio_end`; `timeout_s`
        bounds the connect and each wait for the next chunk."""
        sio = await self.connect(timeout_s=timeout_s)
        request_id = message["requestId"]
        queue: asyncio.Queue[bytes | APIError | None] = asyncio.Queue()
        self._pending[request_id] = queue
        finished = False
        try:
            try:
                await sio.emit("synthesize", message, namespace=WEBSOCKET_NAMESPACE)
            except socketio.exceptions.SocketIOError:
                raise APIConnectionError("lost the connection to Uplift AI") from None
            while True:
                try:
                    async with asyncio.timeout(timeout_s):
                        item = await queue.get()
                except TimeoutError:
                    raise APITimeoutError("Uplift AI sent no audio in time") from None
                if item is None:
                    finished = True
                    return
                if isinstance(item, APIError):
                    finished = True
                    raise item
                yield item
        finally:
            self._pending.pop(request_id, None)
            if not finished and sio.connected:
                # Interrupted or timed out: stop Uplift generating audio nobody will play.
                with suppress(Exception):
                    cancel = {"type": "cancel", "requestId": request_id}
                    await sio.emit("cancel", cancel, namespace=WEBSOCKET_NAMESPACE)

    async def aclose(self) -> None:
        async with self._connect_lock:
            await self._drop()

    async def _drop(self) -> None:
        sio, self._sio = self._sio, None
        ready, self._ready = self._ready, None
        if ready is not None:
            if not ready.done():
                ready.cancel()
            elif not ready.cancelled():
                ready.exception()  # retrieved, so asyncio does not log it as forgotten
        if sio is not None:
            with suppress(Exception):
                await sio.disconnect()

    def _on_message(self, data: Any, ready: asyncio.Future[None]) -> None:
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "ready":
            if not ready.done():
                ready.set_result(None)
            return
        request_id = data.get("requestId")
        queue = self._pending.get(request_id) if isinstance(request_id, str) else None
        if kind == "audio" and queue is not None and data.get("audio"):
            queue.put_nowait(base64.b64decode(data["audio"]))
        elif kind == "audio_end" and queue is not None:
            queue.put_nowait(None)
        elif kind == "error":
            error = _message_error(data)
            logger.warning("Uplift AI reported an error (status %s)", error.status_code)
            if queue is not None:
                queue.put_nowait(error)
            elif request_id is None and not ready.done():
                ready.set_exception(error)  # the session was refused (e.g. the key)
            elif request_id is None:
                # An error about the session rather than one request fails them all, so none
                # waits out its timeout. One naming a request we no longer track is ignored.
                for pending in self._pending.values():
                    pending.put_nowait(_message_error(data))

    def _on_disconnect(self, ready: asyncio.Future[None]) -> None:
        if not ready.done():
            ready.set_exception(APIConnectionError("Uplift AI hung up before it was ready"))
        for queue in self._pending.values():
            queue.put_nowait(APIConnectionError("Uplift AI closed the connection"))


# Uplift does not document its error codes: numeric HTTP-like codes are taken as they are,
# anything else is classified by words in the code and message.
_STATUS_HINTS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (401, ("unauthor", "authenticat", "api key", "apikey", "invalid token", "forbidden")),
    (429, ("rate limit", "too many", "concurren")),
    (402, ("credit", "quota", "balance", "payment", "insufficient")),
    (400, ("invalid", "not found", "unsupported", "too long", "exceed", "required")),
)


def _status_for(code: Any, message: str, *, default: int) -> int:
    if isinstance(code, int | str) and str(code).strip().isdigit():
        status = int(str(code).strip())
        if 400 <= status < 600:
            return status
    text = f"{code or ''} {message}".lower()
    for status, words in _STATUS_HINTS:
        if any(word in text for word in words):
            return status
    return default


def _message_error(data: dict[str, Any]) -> APIStatusError:
    message = str(data.get("message") or "error without a message")
    code = data.get("code")
    status = _status_for(code, message, default=500)
    # APIStatusError makes 4xx non-retryable (except 408/429) and 5xx retryable.
    return APIStatusError(
        f"Uplift AI: {message}",
        status_code=status,
        request_id=data.get("requestId"),
        body={"code": code, "message": message},
    )


def _refusal_error(data: Any) -> APIStatusError:
    # A refused namespace connect is Uplift checking the `auth` token, so 401 unless the
    # refusal says otherwise.
    payload = data if isinstance(data, dict) else {"message": data}
    message = str(payload.get("message") or "connection refused")
    extra = payload.get("data")
    code = payload.get("code") or (extra.get("code") if isinstance(extra, dict) else None)
    status = _status_for(code, message, default=401)
    return APIStatusError(
        f"Uplift AI refused the connection: {message}",
        status_code=status,
        body={"code": code, "message": message},
    )
