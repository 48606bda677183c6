"""`python manage.py ...` as an operator runs it: results on stdout, errors on stderr with
exit code 2 and what to do, secrets never printed (except the token asked for)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import jwt as pyjwt
import pytest
from livekit.api import TokenVerifier

from core.config import PROJECT_ROOT
from infrastructure import migrations

pytestmark = pytest.mark.integration

FOREIGN = ("OPENAI_", "LIVEKIT_", "UPLIFTAI_", "DATABASE_", "REDIS_", "SUPABASE_", "LOG_LEVEL",
           "EMBEDDED_")
API_KEY = "devkey"
API_SECRET = "a-secret-of-at-least-32-characters-long"
PLAYGROUND_USER = "b15404fe-3920-518a-9181-bacecdc5c7bd"  # voice_assistant_user_1234 in dev


def manage(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """manage.py in a clean environment, from a directory with no .env."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    clean.update(env)
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "manage.py"), *args], cwd=cwd, env=clean,
        capture_output=True, text=True, timeout=180,
    )


def test_help_lists_every_command(tmp_path: Path) -> None:
    done = manage("--help", cwd=tmp_path)
    assert done.returncode == 0
    assert "migrate" in done.stdout and "token" in done.stdout


def test_migrate_on_a_fresh_database_applies_everything_and_a_second_run_applies_nothing(
    empty_db: str, tmp_path: Path
) -> None:
    files = [m.file_name for m in migrations.discover()]
    first = manage("migrate", cwd=tmp_path, DATABASE_URL=empty_db)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        *(f"applied {name}" for name in files),
        f"{len(files)} applied; the schema is current ({len(files)} migrations)",
    ]
    second = manage("migrate", cwd=tmp_path, DATABASE_URL=empty_db)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == (
        f"nothing to apply: the schema is current ({len(files)} migrations)"
    )


def test_migrate_check_names_what_is_pending_exits_1_and_applies_nothing(
    behind_dsn: str, tmp_path: Path
) -> None:
    newest = migrations.discover()[-1].file_name
    check = manage("migrate", "--check", cwd=tmp_path, DATABASE_URL=behind_dsn)
    assert check.returncode == 1
    assert check.stdout.strip() == f"pending {newest}"
    assert "1 migration(s) pending: run `python manage.py migrate`" in check.stderr
    again = manage("migrate", "--check", cwd=tmp_path, DATABASE_URL=behind_dsn)
    assert again.returncode == 1  # the check applied nothing

    applied = manage("migrate", cwd=tmp_path, DATABASE_URL=behind_dsn)
    assert applied.stdout.splitlines()[0] == f"applied {newest}"
    current = manage("migrate", "--check", cwd=tmp_path, DATABASE_URL=behind_dsn)
    assert current.returncode == 0
    assert current.stdout.startswith("the schema is current")


def test_migrate_against_an_unreachable_database_exits_2_saying_what_to_check(
    tmp_path: Path,
) -> None:
    with socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"postgresql://postgres:hunter2@127.0.0.1:{refusing.getsockname()[1]}/db"
        for args in (("migrate",), ("migrate", "--check")):
            done = manage(*args, cwd=tmp_path, DATABASE_URL=url)
            assert done.returncode == 2
            assert "manage.py migrate: could not connect to Postgres" in done.stderr
            assert "what to do: check DATABASE_URL" in done.stderr
            assert done.stdout == ""
            assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


@pytest.fixture
def data_root() -> Iterator[Path]:
    # Not tmp_path: the unprivileged user pgserver runs Postgres as must enter it.
    root = Path(tempfile.mkdtemp(prefix="companion-manage-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_migrate_without_database_url_migrates_the_embedded_database_and_stops_it(
    data_root: Path,
) -> None:
    pg = data_root / "pg"
    done = manage("migrate", cwd=data_root, EMBEDDED_PG_DIR=str(pg))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].endswith("the schema is current "
                                                 f"({len(migrations.discover())} migrations)")
    assert not (pg / "postmaster.pid").exists()  # nobody else held it: stopped again
    check = manage("migrate", "--check", cwd=data_root, EMBEDDED_PG_DIR=str(pg))
    assert check.returncode == 0, check.stderr


def token(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    keys = {"LIVEKIT_API_KEY": API_KEY, "LIVEKIT_API_SECRET": API_SECRET}
    return manage("token", *args, cwd=cwd, **{**keys, **env})


def test_a_token_lets_that_user_join_that_room_and_talk_and_nothing_else(
    tmp_path: Path,
) -> None:
    user = "3f1c9a2e-7b4d-4e8a-9c61-2d5f0e8b7a14"
    done = token("--user", user, "--room", "kitchen", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    jwt = done.stdout.strip()
    assert len(done.stdout.splitlines()) == 1  # only the token: $(...) captures it
    claims = TokenVerifier(API_KEY, API_SECRET).verify(jwt)  # checks the signature
    assert claims.identity == user
    grants = claims.video
    assert grants is not None
    assert (grants.room, grants.room_join) == ("kitchen", True)
    assert grants.can_publish and grants.can_subscribe and grants.can_publish_data
    assert not (grants.room_admin or grants.room_create or grants.room_list)
    assert API_SECRET not in done.stdout + done.stderr
    with pytest.raises(pyjwt.InvalidSignatureError):
        TokenVerifier(API_KEY, "another-secret-of-at-least-32-characters").verify(jwt)


def test_the_token_lives_as_long_as_asked(tmp_path: Path) -> None:
    for ttl, expected in (("90", timedelta(seconds=90)), ("30m", timedelta(minutes=30)),
                          (None, timedelta(hours=1))):
        args = ("--ttl", ttl) if ttl else ()
        done = token("--user", "3f1c9a2e-7b4d-4e8a-9c61-2d5f0e8b7a14", "--room", "r", *args,
                     cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        claims = pyjwt.decode(done.stdout.strip(), API_SECRET, algorithms=["HS256"])
        assert claims["exp"] - claims["nbf"] == expected.total_seconds()


@pytest.mark.parametrize(
    ("args", "said"),
    [(("--user", "voice_assistant_user_1234"), "or add --dev"),
     (("--user", "00000000-0000-0000-0000-000000000000"), "placeholder"),
     (("--user", "3f1c9a2e-7b4d-4e8a-9c61-2d5f0e8b7a14", "--ttl", "3d"), "1 minute to 24 hours"),
     (("--user", "3f1c9a2e-7b4d-4e8a-9c61-2d5f0e8b7a14", "--room", "a room/with slash"),
      "not a room name")],
)
def test_a_token_for_a_bad_user_id_room_or_ttl_is_refused_with_what_to_do(
    args: tuple[str, ...], said: str, tmp_path: Path
) -> None:
    room = () if "--room" in args else ("--room", "kitchen")
    done = token(*args, *room, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("manage.py token: ") and "what to do:" in done.stderr
    assert said in done.stderr


def test_with_dev_a_participant_name_gets_the_user_agent_dev_maps_it_to(tmp_path: Path) -> None:
    done = token("--user", "voice_assistant_user_1234", "--room", "r", "--dev", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert TokenVerifier(API_KEY, API_SECRET).verify(done.stdout.strip()).identity == (
        PLAYGROUND_USER
    )


def test_a_token_without_livekit_keys_is_refused_naming_them(tmp_path: Path) -> None:
    done = manage("token", "--user", "3f1c9a2e-7b4d-4e8a-9c61-2d5f0e8b7a14", "--room", "r",
                  cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert "LIVEKIT_API_KEY and LIVEKIT_API_SECRET are not set" in done.stderr
