"""A real Daphne serving ``voicebot.asgi:application`` in a fresh subprocess, for end-to-end tests.

Started with the ``daphne`` command exactly as in production, on 127.0.0.1 and a free port, with
``DATABASE_URL`` pointing at the test database. (Channels' live-server test case forks the test
process instead; a fork inherits asgiref's thread executor without its thread once any earlier
test has used it, and the server then hangs on its first ``sync_to_async``.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from calls.management.commands.demo import free_port

ROOT = Path(__file__).resolve().parent.parent.parent


def database_url(settings_dict: dict[str, Any]) -> str:
    """A ``DATABASE_URL`` for the database a Django connection points at (SQLite or PostgreSQL)."""
    engine, name = settings_dict["ENGINE"], settings_dict["NAME"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{name}"
    if engine.endswith("postgresql"):
        user = quote(settings_dict.get("USER") or "", safe="")
        password = (
            f":{quote(str(settings_dict['PASSWORD']), safe='')}" if settings_dict.get("PASSWORD") else ""
        )
        auth = f"{user}{password}@" if user else ""
        host = settings_dict.get("HOST") or "127.0.0.1"
        port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
        return f"postgres://{auth}{host}{port}/{name}"
    raise ValueError(f"no DATABASE_URL form for {engine}")


class DaphneServer:
    """``with DaphneServer(env) as server:`` → ``server.http_url`` / ``server.ws_url`` until exit.

    ``env`` is laid over this process's environment; ``media_root`` (optional) becomes the server's
    ``MEDIA_ROOT``. The server prints to a log file (``log()``, ``log_tail()``) and is stopped with
    SIGINT (Daphne's graceful shutdown), then killed if it does not exit.
    """

    def __init__(
        self,
        env: dict[str, str],
        *,
        media_root: Path | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.port = free_port()
        self.http_url = self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.media_root = media_root
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "voicebot.settings", **env}
        if media_root is not None:
            self.env["MEDIA_ROOT"] = str(media_root)
        self.env.pop("VOICEBOT_TESTING", None)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = (
            log_path or Path(os.environ.get("TMPDIR", "/tmp")) / f"voicebot-daphne-{self.port}.log"
        )
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
            daphne, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout_s
        # Daphne imports the application (and so sets Django up) before it listens.
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited at startup:\n{self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"daphne did not listen within {self.startup_timeout_s} s:\n{self.log_tail()}")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()

    def log(self) -> str:
        """What the server printed so far (for failure messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


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
