from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from infrastructure.connection_pool import ConnectionPool

pytestmark = pytest.mark.integration


@pytest.fixture
def data_root() -> Iterator[Path]:
    # Not tmp_path: pytest keeps its tmp root at mode 0700 (and re-asserts it when another
    # pytest starts), which the unprivileged postgres user that pgserver runs as cannot enter.
    root = Path(tempfile.mkdtemp(prefix="companion-embedded-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _worker_script(data_dir: Path, marker: str) -> str:
    # A second worker process, as LiveKit would start one per job.
    return textwrap.dedent(f"""
        import asyncio
        from core.config import Settings
        from infrastructure.connection_pool import ConnectionPool

        async def main():
            settings = Settings(_env_file=None, embedded_pg_dir={str(data_dir)!r})
            pool = await ConnectionPool.create(settings)
            await pool.execute("insert into public.users (id, display_name) "
                               "values (gen_random_uuid(), $1)", {marker!r})
            print(await pool.fetchval("select count(*) from public.users"))
            await pool.aclose()

        asyncio.run(main())
    """)


async def test_without_database_url_an_embedded_postgres_with_pgvector_serves_the_schema(
    make_settings, data_root: Path
) -> None:
    settings = make_settings(embedded_pg_dir=data_root / "pg")
    assert settings.uses_embedded_postgres
    pool = await ConnectionPool.create(settings)
    try:
        assert pool.stats()["backend"] == "embedded"
        version = await pool.fetchval("show server_version")
        assert version.startswith("16.")
        assert await pool.fetchval("select extversion from pg_extension where extname = 'vector'")
        assert await pool.fetchval("select to_regclass('public.memories')") is not None
    finally:
        await pool.aclose()


async def test_two_worker_processes_share_one_embedded_server_and_its_data(
    make_settings, data_root: Path
) -> None:
    data_dir = data_root / "shared-pg"
    pool = await ConnectionPool.create(make_settings(embedded_pg_dir=data_dir))
    try:
        await pool.execute(
            "insert into public.users (id, display_name) values (gen_random_uuid(), 'first')")
        out = subprocess.run(
            [sys.executable, "-c", _worker_script(data_dir, "second")],
            capture_output=True, text=True, timeout=180,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.strip().splitlines()[-1] == "2"
        # The other process has left; this one's server must still be up and hold both rows.
        names = {r["display_name"] for r in await pool.fetch("select display_name from users")}
        assert names == {"first", "second"}
    finally:
        await pool.aclose()
