"""A real Daphne serving ``voicebot.asgi:application`` in a fresh subprocess, for end-to-end tests.

Started with the ``daphne`` command exactly as in production, on 127.0.0.1 and a free port, with
``DATABASE_URL`` pointing at the test database. (Channels' live-server test case forks the test
process instead; a fork inherits asgiref's thread executor without its thread once any earlier
test has used it, and the server then hangs on its first ``sync_to_async``.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url(settings_dict: dict[str, Any]) -> str:
    """A ``DATABASE_URL`` for the database a Django connection points at (SQLite or PostgreSQL)."""
    engine, name = settings_dict["ENGINE"], settings_dict["NAME"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{name}"
    if engine.endswith("postgresql"):
        user = settings_dict.get("USER") or ""
        password = settings_dict.get("PASSWORD") or ""
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = settings_dict.get("HOST") or "127.0.0.1"
        port = settings_dict.get("PORT") or 5432
        return f"postgres://{auth}{host}:{port}/{name}"
    raise ValueError(f"no DATABASE_URL form for {engine}")


class DaphneServer:
    """``with DaphneServer(env) as server:`` → ``server.http_url`` / ``server.ws_url`` until exit."""

    def __init__(self, env: dict[str, str], *, startup_timeout_s: float = 30.0) -> None:
        self.port = free_port()
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "voicebot.settings", **env}
        self.env.pop("VOICEBOT_TESTING", None)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"voicebot-daphne-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DaphneServer:
        self._log = self.log_path.open("wb")
        daphne = [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            "voicebot.asgi:application",
        ]
        self.process = subprocess.Popen(
            daphne, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited at startup:\n{self.log()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"daphne did not listen within {self.startup_timeout_s} s:\n{self.log()}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()

    def log(self) -> str:
        """What the server printed so far (for failure messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def daphne_on_test_db(**env: str) -> Iterator[DaphneServer]:
    """Daphne on the database the test process is using (call inside a transactional test)."""
    from django.db import connection

    with DaphneServer({"DATABASE_URL": database_url(connection.settings_dict), **env}) as server:
        yield server
    if connection.vendor == "postgresql":
        # PostgreSQL ends a backend a moment after its client goes away; the test database can only be
        # dropped once the server's sessions are gone.
        deadline = time.monotonic() + 10
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if cursor.fetchone()[0] == 0:
                    break
                time.sleep(0.1)
