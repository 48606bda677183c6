from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from infrastructure.database import open_migrated
from services.composition import build_services
from tests.support.openai_server import OpenAIStubServer

pytestmark = pytest.mark.integration


@pytest.fixture
def data_root() -> Iterator[Path]:
    # Not tmp_path: pytest keeps its tmp root at mode 0700 (and re-asserts it when another
    # pytest starts), which the unprivileged postgres user that pgserver runs as cannot enter.
    root = Path(tempfile.mkdtemp(prefix="companion-embedded-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStubServer]:
    async with OpenAIStubServer() as server:
        yield server


def _model_settings(stub: OpenAIStubServer) -> dict[str, object]:
    # Embeddings from the loopback server: no local model to load in each worker.
    return {
        "openai_base_url": stub.base_url,
        "openai_api_key": "test-key",
        "embedding_provider": "openai",
        "embedding_model": "text-embedding-3-small",
        "embedding_dimensions": 384,
    }


def _worker_script(data_dir: Path, stub: OpenAIStubServer, marker: str) -> str:
    # A second worker process, as LiveKit would start one per job.
    return textwrap.dedent(f"""
        import asyncio
        from core.config import Settings
        from services.composition import build_services

        async def main():
            settings = Settings(
                _env_file=None, embedded_pg_dir={str(data_dir)!r}, redis_enabled=False,
                batch_spool_dir={str(data_dir.parent / "spool-second")!r},
                **{_model_settings(stub)!r},
            )
            services = await build_services(settings)
            pool = services.pool
            await pool.execute("insert into public.users (id, display_name) "
                               "values (gen_random_uuid(), $1)", {marker!r})
            print(await pool.fetchval("select count(*) from public.users"))
            await services.aclose()

        asyncio.run(main())
    """)


async def test_without_database_url_an_embedded_postgres_with_pgvector_serves_the_schema(
    make_settings, data_root: Path, stub: OpenAIStubServer
) -> None:
    settings = make_settings(embedded_pg_dir=data_root / "pg", **_model_settings(stub))
    assert settings.database_url is None
    worker, applied = await open_migrated(settings)  # what the worker does at its start
    services = await build_services(settings)
    pool = services.pool
    try:
        assert applied
        assert pool.stats()["backend"] == "embedded"
        version = await pool.fetchval("show server_version")
        assert version.startswith("16.")
        assert await pool.fetchval("select extversion from pg_extension where extname = 'vector'")
        assert await pool.fetchval("select to_regclass('public.memories')") is not None
    finally:
        await services.aclose()
        await worker.aclose()


async def test_the_worker_keeps_the_embedded_server_up_after_a_job_in_its_own_process_ends(
    make_settings, data_root: Path, stub: OpenAIStubServer
) -> None:
    # `console` runs its job in a thread of the worker: one process, two handles.
    settings = make_settings(embedded_pg_dir=data_root / "pg", **_model_settings(stub))
    worker, _ = await open_migrated(settings)
    try:
        job = await build_services(settings)
        started = await job.pool.fetchval("select pg_postmaster_start_time()")
        await job.pool.execute("insert into users (id) values (gen_random_uuid())")
        await job.aclose()
        next_job = await build_services(settings)
        try:
            # The same server, never stopped in between: the job's close left the worker's.
            assert await next_job.pool.fetchval("select pg_postmaster_start_time()") == started
            assert await next_job.pool.fetchval("select count(*) from users") == 1
        finally:
            await next_job.aclose()
    finally:
        await worker.aclose()
    assert not (data_root / "pg" / "postmaster.pid").exists()  # the last handle stopped it


async def test_two_worker_processes_share_one_embedded_server_and_its_data(
    make_settings, data_root: Path, stub: OpenAIStubServer
) -> None:
    data_dir = data_root / "shared-pg"
    settings = make_settings(embedded_pg_dir=data_dir, **_model_settings(stub))
    worker, _ = await open_migrated(settings)
    services = await build_services(settings)
    pool = services.pool
    try:
        await pool.execute(
            "insert into public.users (id, display_name) values (gen_random_uuid(), 'first')")
        # In a thread: this loop keeps serving the loopback model server meanwhile.
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", _worker_script(data_dir, stub, "second")],
            capture_output=True, text=True, timeout=180,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == "2"
        # The other process has left; this one's server must still be up and hold both rows.
        names = {r["display_name"] for r in await pool.fetch("select display_name from users")}
        assert names == {"first", "second"}
    finally:
        await services.aclose()
        await worker.aclose()
