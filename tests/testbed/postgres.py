"""A real Postgres for the test session.

With ``KSTEP_TEST_POSTGRES_URL`` set, that server is used and each session gets a fresh
database in it. Otherwise a throwaway cluster is created with the machine's PostgreSQL server
binaries: ``initdb`` and ``postgres`` run as the ``postgres`` OS user when the tests run as root
(Postgres refuses root), listen on a free loopback port without a Unix socket, and skip fsync.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from testbed.processes import ComponentError, ManagedProcess, free_port, log_tail, wait_until

logger = logging.getLogger(__name__)

_DRIVER = "postgresql+psycopg"
_DATA_DIR_PREFIX = "kstep-testbed-pg-"


def find_server_binaries() -> Path | None:
    """Return the directory holding ``initdb`` and ``postgres``, newest major version first."""
    candidates = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        candidates.append(Path(bindir))
    # Debian installs each major version beside the others and puts no server on PATH.
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: int(Path(p).parent.name))][::-1]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    return None


def _remove_abandoned_data_dirs() -> None:
    """Delete data directories of sessions that were killed before they could clean up."""
    for directory in Path(tempfile.gettempdir()).glob(f"{_DATA_DIR_PREFIX}*"):
        try:
            owner = int((directory / "owner.pid").read_text())
            os.kill(owner, 0)
        except ProcessLookupError:
            logger.info("Removing %s, left by a test session that was killed", directory)
            shutil.rmtree(directory, ignore_errors=True)
        except (OSError, ValueError):
            continue


def _libpq_dsn(url: URL) -> str:
    """Return a libpq connection string for a SQLAlchemy URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresServer:
    """A Postgres server and the databases a session creates in it."""

    def __init__(self, admin_url: URL, process: ManagedProcess | None = None) -> None:
        self.admin_url = admin_url.set(drivername=_DRIVER)
        self.process = process
        self.data_dir: Path | None = None
        self.started_in: float | None = None
        self._databases: list[str] = []

    @classmethod
    def start_throwaway(cls, run_dir: Path) -> PostgresServer:
        """Create and start a cluster; raises ComponentError with initdb's or postgres' log."""
        began = time.monotonic()
        bindir = find_server_binaries()
        if bindir is None:
            raise FileNotFoundError("no PostgreSQL server binaries (initdb, postgres) found")
        as_root = os.geteuid() == 0
        # The data directory must belong to the server's user, which cannot enter pytest's
        # private temporary directory; it lives in a directory of its own instead, marked with
        # the owning process so that a killed session's directory can be recognised.
        _remove_abandoned_data_dirs()
        data_dir = Path(tempfile.mkdtemp(prefix=_DATA_DIR_PREFIX)) / "data"
        data_dir.parent.chmod(0o755)
        (data_dir.parent / "owner.pid").write_text(str(os.getpid()))
        data_dir.mkdir()
        run_as: list[str] = []
        if as_root:
            postgres_user = pwd.getpwnam("postgres")
            os.chown(data_dir, postgres_user.pw_uid, postgres_user.pw_gid)
            run_as = ["runuser", "-u", "postgres", "--"]

        logs = run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        initdb_log = logs / "postgres-initdb.log"
        with initdb_log.open("wb") as log:
            result = subprocess.run(
                [
                    *run_as,
                    str(bindir / "initdb"),
                    f"--pgdata={data_dir}",
                    "--username=postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                timeout=120,
            )
        if result.returncode != 0:
            shutil.rmtree(data_dir.parent, ignore_errors=True)
            raise ComponentError(
                f"postgres initdb exited with code {result.returncode}; last lines of "
                f"{initdb_log}:\n{log_tail(initdb_log)}"
            )

        port = free_port()
        # setpriv ties the server's life to runuser's, whose own life is tied to pytest's.
        keeper = ["setpriv", "--pdeathsig", "SIGINT", "--"] if shutil.which("setpriv") else []
        process = ManagedProcess(
            "postgres",
            [
                *run_as,
                *keeper,
                str(bindir / "postgres"),
                "-D",
                str(data_dir),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            log_path=logs / "postgres.log",
            cwd=Path("/"),
        ).start()
        server = cls(
            URL.create(
                _DRIVER, username="postgres", host="127.0.0.1", port=port, database="postgres"
            ),
            process,
        )
        server.data_dir = data_dir
        try:
            wait_until(
                server._accepts_connections,
                timeout=60,
                what="postgres accepting connections",
                check=process.raise_if_exited,
            )
        except BaseException as exc:
            server.stop()
            if isinstance(exc, TimeoutError):
                raise ComponentError(process.describe_failure(str(exc))) from exc
            raise
        server.started_in = time.monotonic() - began
        logger.info("Postgres is ready on port %s after %.1f s", port, server.started_in)
        return server

    def _accepts_connections(self) -> bool:
        with psycopg.connect(_libpq_dsn(self.admin_url), connect_timeout=2):
            return True

    def create_database(self, prefix: str = "kstep_test") -> str:
        """Create an empty database and return its SQLAlchemy URL (``postgresql+psycopg://``)."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(_libpq_dsn(self.admin_url), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._databases.append(name)
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def drop_databases(self) -> None:
        """Drop the databases this object created, closing connections left open to them."""
        with psycopg.connect(_libpq_dsn(self.admin_url), autocommit=True) as connection:
            while self._databases:
                name = self._databases.pop()
                connection.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    def stop(self) -> None:
        """Drop created databases of a given server; shut a throwaway one down by its PID."""
        if self.process is None:
            with contextlib.suppress(psycopg.Error):
                self.drop_databases()
            return
        postmaster = self._postmaster_pid()
        if postmaster is not None:
            # SIGINT is Postgres' fast shutdown: it does not wait for clients to disconnect.
            with contextlib.suppress(ProcessLookupError):
                os.kill(postmaster, signal.SIGINT)
        self.process.stop(grace=15.0, sig=signal.SIGINT)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def _postmaster_pid(self) -> int | None:
        if self.data_dir is None:
            return None
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def connect_given(url: str) -> PostgresServer:
    """Use the server at ``url`` (any SQLAlchemy or libpq-style postgres URL)."""
    # libpq accepts the short scheme; SQLAlchemy knows the dialect only by its full name.
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    server = PostgresServer(parsed)
    try:
        server._accepts_connections()
    except psycopg.Error as exc:
        raise ComponentError(f"cannot connect to KSTEP_TEST_POSTGRES_URL: {exc}") from exc
    return server
