"""The loopback OpenAI stub of bench/soak.py, in its own process (its own interpreter, like a
real server), with a small control endpoint on a second loopback port for injecting faults.

    python -m bench.soak_stub      prints one JSON line with both URLs once it listens

`POST /fail` makes the next `n` requests under `path_prefix` answer `status`; `POST /reset`
ends that. Every few seconds the stub forgets the requests it recorded (a long soak would
keep them all).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from tests.support.markers import marker_brain
from tests.support.openai_server import OpenAIStubServer

ROOT = Path(__file__).resolve().parents[1]
EMBEDDINGS = "/v1/embeddings"
CHAT = "/v1/chat/completions"


class StubProcess:
    """The parent side: starts the stub's process, sends it faults, stops it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""
        self.control_url = ""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.soak_stub"], cwd=ROOT, stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        self.base_url, self.control_url = ready["base_url"], ready["control_url"]

    async def control(self, action: str, **body: Any) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(f"{self.control_url}/{action}", json=body)
            response.raise_for_status()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def serve_stub() -> None:
    """The child side: the stub, its control app, and no unbounded history."""
    server = OpenAIStubServer(chat_script=marker_brain)
    await server.start()

    async def fail(request: web.Request) -> web.Response:
        body = await request.json()
        server.fail_next(int(body["n"]), status=int(body["status"]),
                         path_prefix=body["path_prefix"], retry_after=body.get("retry_after"))
        return web.json_response({"ok": True})

    async def reset(request: web.Request) -> web.Response:
        server.reset()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/fail", fail)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    control_port = runner.addresses[0][1]
    print(json.dumps({"base_url": server.base_url,
                      "control_url": f"http://127.0.0.1:{control_port}"}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 5)
        except TimeoutError:
            server.requests.clear()
    await runner.cleanup()
    await server.close()


if __name__ == "__main__":
    asyncio.run(serve_stub())
