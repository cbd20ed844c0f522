"""A private PostgreSQL server in a temporary folder, for the tests and the reliability benchmark
of workers sharing one study (Debian's ``postgresql`` package; the driver is the ``[distributed]``
extra). Nothing of the machine's own PostgreSQL setup is used or changed.

    with PrivatePostgres() as server:
        run_search(..., storage=server.url)

PostgreSQL refuses to run as root: under root the server runs as the ``postgres`` user the Debian
package creates, in a folder it owns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """The server could not be made or started here (no binaries, no user to run it as, ...)."""


def postgres_bin() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``: on the PATH, or Debian's newest under /usr/lib/postgresql."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = {int(p.parent.parent.name): p.parent
                for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if p.parent.parent.name.isdigit()}
    return versions[max(versions)] if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivatePostgres:
    """``initdb`` into a new temporary folder, a server on a free local port, trust authentication
    for local connections only; :meth:`stop` (or leaving the ``with``) stops it and deletes it all."""

    def __init__(self, database: str = "postgres") -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            raise PostgresUnavailable("no PostgreSQL binaries (install Debian's postgresql package)")
        self.run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.run_as and shutil.which("runuser") is None:
            raise PostgresUnavailable("running as root without runuser to start PostgreSQL as its own user")
        self.database = database
        self.port = _free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="autoprompt-pg-"))  # directly under the temp dir: the server's user must reach it
        self.data = self.folder / "data"
        self.started = False

    @property
    def url(self) -> str:
        return self.url_of(self.database)

    def url_of(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database on the server (one per study, so studies never meet); its URL."""
        import psycopg

        if not name.isidentifier():
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=self.database, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url_of(name)

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self.run_as, *command], capture_output=True, text=True)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(command[:2])} failed: {(done.stderr or done.stdout).strip()[-800:]}")

    def start(self) -> "PrivatePostgres":
        if self.run_as:
            shutil.chown(self.folder, user="postgres", group="postgres")
        try:
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
            options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options,
                      "-w", "-t", "60", "start")
        except (PostgresUnavailable, OSError) as error:
            self.remove()
            raise PostgresUnavailable(str(error)) from None
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            stop = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"]
            subprocess.run([*self.run_as, *stop], capture_output=True)
            self.started = False
        self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "PrivatePostgres":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
