"""Real Postgres (pgserver's binaries) and real redis-server on free loopback ports, for tests.

Both can be stopped and started again on the same port, so tests can kill them mid-flight.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class PostgresProcess:
    """Postgres 16 + pgvector from the pgserver wheel, listening on 127.0.0.1:<port>."""

    def __init__(self) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="companion-pg-"))
        self.pgdata = self.root / "data"
        # Postgres refuses to run as root; pgserver's own helper creates an unprivileged user.
        self.run_as: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists("pgserver")
            ensure_prefix_permissions(self.bin)
            self.run_as = "pgserver"
            os.chmod(self.root, 0o777)
        self._run([str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                   "--auth=trust", "--encoding=utf8"])

    def _run(self, args: list[str]) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.run_as, timeout=60)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._run([
            str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "30",
            "-l", str(self.root / "log"),
            "-o", f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            "start",
        ])
        _wait_for_port(self.port)

    def stop(self, mode: str = "fast") -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", mode, "stop"])

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Stopped (connections refused) for the block; always running again afterwards."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def cluster_pids(self) -> list[int]:
        """The postmaster and every process it started (backends, checkpointer, ...)."""
        postmaster = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        """SIGSTOP the whole cluster: connections stay open and nothing answers, as with a
        saturated server or a dead network path (not a refused connection). Always `thaw`."""
        postmaster, *_ = self.cluster_pids()
        # The postmaster first, so that it starts no process that would miss the signal.
        os.kill(postmaster, signal.SIGSTOP)
        for pid in self.cluster_pids()[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT every process of the cluster (harmless when it is not frozen)."""
        for pid in self.cluster_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [str(self.bin / "psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             self.dsn_for(database), "-c", sql],
            check=True, capture_output=True, text=True, timeout=60,
        )
        return out.stdout.strip()

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class RedisProcess:
    """A throwaway redis-server (from apt) on 127.0.0.1:<port>, no persistence."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(self.binary).exists():
            raise RuntimeError("redis-server is not installed; run scripts/setup.sh --test")
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port)

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(timeout=10)
            self._proc = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

