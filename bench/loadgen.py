"""What the server benchmarks (``calls_per_process``, ``pipeline_overhead``) share: the emulated
callers, the server and fake processes, the scratch database and CPU/memory sampling.

**Callers.** Each call is ``calls.emulator.stream.EmulatedMediaStream`` (Twilio's side: real-time
20 ms media, playout of the bot's audio, marks echoed when played, ``clear`` honoured) over a
``websockets`` client connection, as ``tests/live/test_daphne.py`` drives Daphne. ``StampedSocket``
sits between the two and timestamps on ``CLOCK_MONOTONIC`` (``time.monotonic_ns``):

- every ``media`` message sent gets ``"bench_ns": <ns at send>`` appended (the server's parser
  ignores unknown fields; with ``MEDIA_FRAME_TIMING_FILE`` set the consumer records the frame's
  handling delay against it, see ``media_ws.frame_timing.FrameTiming``); the k-th media message is the
  caller audio of call-clock ms [20k, 20k + 20), so ``media_sent_ns[k]`` is when that frame left;
- every message received is stamped on arrival (``arrivals``: ns and kind).

**The caller's part** (``converse``): full duplex, as a caller who keeps interrupting: wait until
the bot's audio plays, let it play 1–3 s (seeded random), then speak a real utterance (from
``bench.speech_set``: the labelled recordings at phone quality) over it, which barges in; the bot
answers the utterance; the caller interrupts that answer again, and so on.

**Processes.** The server is the ``daphne`` command (``ServerProcess``), pinned with ``taskset``;
the Deepgram fake runs in its own process (``FakeServicesProcess``, ``bench.fake_services``). The
load generator pins itself to the other CPUs (``pin_self``). A scratch PostgreSQL database (or a
SQLite file) is created, migrated and dropped by ``scratch_database``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import psutil

from bench.common import ROOT

FRAME_NS = 20_000_000  # one 20 ms media frame
_STAMP_PREFIX = '{"event":"media"'


# --- caller speech ---------------------------------------------------------------------------


@cache
def caller_clips(min_ms: int = 700, max_ms: int = 4000) -> tuple[bytes, ...]:
    """Real utterances for the emulated callers: μ-law 8 kHz bytes, each ``min_ms``–``max_ms``
    long, cut from the labelled set (``bench.speech_set.clips``: each with up to 100 ms of its
    recording before the speech and up to 300 ms after)."""
    from bench.speech_set import clips
    from lab.telephone import float_to_pcm16
    from media_ws.audio import pcm16_to_ulaw

    out = []
    for clip in clips():
        ms = len(clip.audio) // 8
        if min_ms <= ms <= max_ms:
            out.append(pcm16_to_ulaw(float_to_pcm16(clip.audio)))
    if not out:
        raise RuntimeError("no caller clips in the labelled set (bench/data)")
    return tuple(out)


# --- the client side of one call -------------------------------------------------------------


@dataclass
class CallRecord:
    """What the load generator saw of one call (all times ``time.monotonic_ns()``)."""

    call_sid: str = ""
    server: int = 0  # index of the server process it went to
    media_sent_ns: list[int] = field(default_factory=list)  # k-th media frame (call ms 20k) sent
    arrivals: list[tuple[int, str]] = field(default_factory=list)  # (ns, "media"|"mark"|"clear")
    said: list[tuple[int, int]] = field(default_factory=list)  # (call ms, clip index) of each utterance
    started_ns: int = 0
    ended_ns: int = 0
    error: str | None = None

    def kinds(self, kind: str) -> list[int]:
        return [ns for ns, k in self.arrivals if k == kind]


class StampedSocket:
    """A ``websockets`` client connection as the emulator's ``send``/``receive``, with stamps."""

    def __init__(self, ws: Any, record: CallRecord, *, stamp: bool = True) -> None:
        self.ws = ws
        self.record = record
        self.stamp = stamp

    async def send(self, text: str) -> None:
        if text.startswith(_STAMP_PREFIX):
            ns = time.monotonic_ns()
            self.record.media_sent_ns.append(ns)
            if self.stamp:
                text = f'{text[:-1]},"bench_ns":{ns}}}'
        await self.ws.send(text)

    async def receive(self) -> str | None:
        import websockets.exceptions

        try:
            message = await self.ws.recv()
        except websockets.exceptions.ConnectionClosed:
            return None
        ns = time.monotonic_ns()
        text = message if isinstance(message, str) else message.decode()
        head = text[:16]
        if head.startswith('{"event":"media'):
            kind = "media"
        elif "mark" in head:
            kind = "mark"
        elif "clear" in head:
            kind = "clear"
        else:
            kind = "other"
        self.record.arrivals.append((ns, kind))
        return text


async def converse(
    stream: Any,
    record: CallRecord,
    rng: random.Random,
    stop: asyncio.Event,
    *,
    barge_after_ms: tuple[int, int],
) -> None:
    """The caller's part: interrupt the bot with real speech again and again until ``stop``."""
    clips = caller_clips()
    while not stop.is_set() and not stream.closed.is_set():
        with contextlib.suppress(TimeoutError):
            await wait_or_stop(stream.wait_bot_speaking(timeout_s=10), stop)
        if stop.is_set():
            return
        await wait_or_stop(stream.wait_clock(stream.clock_ms + rng.randint(*barge_after_ms)), stop)
        if stop.is_set():
            return
        i = rng.randrange(len(clips))
        record.said.append((stream.clock_ms, i))
        await wait_or_stop(stream.say(clips[i]), stop)


async def wait_or_stop(aw: Any, stop: asyncio.Event) -> None:
    """Await ``aw`` unless ``stop`` is set first (then ``aw`` is cancelled); re-raises its error."""
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()


async def run_call(
    url: str,
    record: CallRecord,
    stop: asyncio.Event,
    *,
    seed: int,
    barge_after_ms: tuple[int, int] = (1000, 3000),
    stamp: bool = True,
    script: Any = None,
) -> CallRecord:
    """One emulated call on ``url`` (``ws://…/media-stream``) until ``stop`` is set, then hang up.

    ``script(stream, record, rng, stop)`` is the caller's part (default ``converse``). Errors are
    kept in ``record.error``, never raised: one failed call must not stop a load level.
    """
    import websockets

    from calls.emulator.stream import EmulatedMediaStream

    caller_clips()  # cached; computed before the first call, not inside one

    rng = random.Random(seed)
    record.started_ns = time.monotonic_ns()
    try:
        # No compression (Twilio's media frames are not deflated) and no client pings.
        async with websockets.connect(url, compression=None, ping_interval=None, open_timeout=30) as ws:
            sock = StampedSocket(ws, record, stamp=stamp)
            stream = EmulatedMediaStream(sock.send, sock.receive)
            record.call_sid = stream.call_sid
            runner = asyncio.create_task(stream.run())
            try:
                if script is None:
                    await converse(stream, record, rng, stop, barge_after_ms=barge_after_ms)
                else:
                    await script(stream, record, rng, stop)
                await wait_or_stop(stream.closed.wait(), stop)
            finally:
                await stream.hang_up()
                with contextlib.suppress(Exception):
                    await ws.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(runner, 10)
            if stream.error is not None:
                record.error = repr(stream.error)
            elif not stop.is_set():
                record.error = "the server closed the stream early"
    except Exception as exc:  # connect refused, handshake timeout, ...
        record.error = repr(exc)
    record.ended_ns = time.monotonic_ns()
    return record


async def run_lean_call(url: str, record: CallRecord, stop: asyncio.Event, *, seed: int) -> CallRecord:
    """A lighter caller for the echo ceiling: the same Twilio messages (``connected``, ``start``,
    then a ``media`` frame of real speech every 20 ms, stamped like ``StampedSocket``), sent on the
    same schedule, but no playout emulation: what comes back is only counted. The full emulator
    costs the load generator about a third of what a call costs our server, so on a 2-core
    machine it could not load the bare echo app to its limit.
    """
    import websockets

    from calls.emulator.stream import new_sid
    from media_ws.protocol import TwilioStreamWriter

    rng = random.Random(seed)
    clips = caller_clips()
    audio = b"".join(
        clips[rng.randrange(len(clips))] + b"\xff" * 8 * rng.randint(500, 2500) for _ in range(8)
    )
    writer = TwilioStreamWriter(new_sid("MZ"), new_sid("CA"), new_sid("AC"))
    record.call_sid = writer.call_sid
    record.started_ns = time.monotonic_ns()
    received = 0

    async def drain(ws: Any) -> None:
        nonlocal received
        with contextlib.suppress(Exception):
            async for _ in ws:
                received += 1

    try:
        async with websockets.connect(url, compression=None, ping_interval=None, open_timeout=30) as ws:
            sock = StampedSocket(ws, record)
            await ws.send(writer.connected())
            await ws.send(writer.start({}))
            reader = asyncio.create_task(drain(ws))
            t0 = time.monotonic()
            k = 0
            while not stop.is_set() and not reader.done():
                delay = t0 + k * FRAME_NS / 1e9 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                at = (k * 160) % (len(audio) - 160)
                await sock.send(writer.media(audio[at : at + 160], k * 20))
                k += 1
            with contextlib.suppress(Exception):
                await ws.send(writer.stop())
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            if not stop.is_set():
                record.error = "the server closed the stream early"
    except Exception as exc:
        record.error = repr(exc)
    record.arrivals.append((time.monotonic_ns(), f"received:{received}"))
    record.ended_ns = time.monotonic_ns()
    return record


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_plan() -> dict[str, str | None]:
    """Where things run: the server(s) on CPU 0 and everything else on the other CPUs, when this
    process may use two or more; no pinning on one CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return {"server": None, "load": None}
    return {"server": str(cpus[0]), "load": ",".join(str(c) for c in cpus[1:])}


def pin_self(cpus: str | None) -> None:
    """Pin this process (the load generator) and its future threads to ``cpus`` ("1" or "1,2")."""
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def _taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


class ServerProcess:
    """``daphne -b 127.0.0.1 -p <port> <app>`` in a subprocess (pinned to ``cpus``), measured with
    psutil. ``with ServerProcess(...) as server:`` → ``server.ws_url``."""

    def __init__(
        self,
        app: str,
        env: dict[str, str],
        *,
        cpus: str | None,
        log_dir: Path,
        name: str,
        runner: Sequence[str] = ("daphne",),
    ) -> None:
        self.app = app
        self.runner = list(runner)  # what ``python -m`` runs: daphne, or a wrapper of its command line
        self.port = free_port()
        self.ws_url = f"ws://127.0.0.1:{self.port}/media-stream"
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "voicebot.settings", **env}
        self.env.pop("VOICEBOT_TESTING", None)
        self.cpus = cpus
        self.log_path = log_dir / f"{name}-{self.port}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.proc: psutil.Process | None = None

    def __enter__(self) -> ServerProcess:
        self._log = self.log_path.open("wb")
        cmd = [
            *_taskset(self.cpus),
            sys.executable,
            "-m",
            *self.runner,
            "-b",
            "127.0.0.1",
            "-p",
            str(self.port),
            self.app,
        ]
        self.popen = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        self.proc = psutil.Process(self.popen.pid)  # taskset execs: same pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.app} exited at startup:\n{self.log()[-3000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"{self.app} did not listen within 60 s:\n{self.log()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()

    def _procs(self) -> list[psutil.Process]:
        assert self.proc is not None
        with contextlib.suppress(psutil.Error):
            return [self.proc, *self.proc.children(recursive=True)]
        return [self.proc]

    def cpu_s(self) -> float:
        """CPU time (user + system, all threads and child processes) used so far, s."""
        total = 0.0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss(self) -> int:
        """Resident memory now (with child processes), bytes."""
        total = 0
        for p in self._procs():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return total

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class FakeServicesProcess:
    """``python -m bench.fake_services`` pinned to ``cpus``; ``env`` points a server at it."""

    def __init__(self, *, cpus: str | None, pacing: str = "default") -> None:
        self.cpus = cpus
        self.pacing = pacing
        self.env: dict[str, str] = {}
        self.popen: subprocess.Popen[bytes] | None = None
        self.proc: psutil.Process | None = None

    def __enter__(self) -> FakeServicesProcess:
        cmd = [*_taskset(self.cpus), sys.executable, "-m", "bench.fake_services", "--pacing", self.pacing]
        self.popen = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            self.__exit__()
            raise RuntimeError("bench.fake_services did not start")
        self.env = json.loads(line)["env"]
        self.proc = psutil.Process(self.popen.pid)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(Exception):
            assert self.popen.stdin is not None
            self.popen.stdin.close()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def cpu_s(self) -> float:
        assert self.proc is not None
        with contextlib.suppress(psutil.Error):
            t = self.proc.cpu_times()
            return t.user + t.system
        return 0.0


def cpu_busy_s() -> list[float]:
    """Busy time (all but idle and iowait) of each logical CPU of the machine so far, s: with the
    server's own CPU time it tells how much of the server's CPU other processes took."""
    return [t.user + t.nice + t.system + t.irq + t.softirq + t.steal for t in psutil.cpu_times(percpu=True)]


def self_cpu_s() -> float:
    """CPU time of this process (the load generator), s."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


# --- the database ----------------------------------------------------------------------------


def postgres_available(dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres") -> bool:
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3):
            return True
    except Exception:
        return False


def redis_available(url: str = "redis://127.0.0.1:6379/0") -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except Exception:
        return False


@contextlib.contextmanager
def scratch_database(kind: str, work_dir: Path) -> Iterator[str]:
    """A fresh, migrated database for one benchmark run; yields its ``DATABASE_URL`` and drops it.

    ``kind``: ``"postgres"`` (database ``vb_bench_<pid>`` on 127.0.0.1:5432, user postgres) or
    ``"sqlite"`` (a file in ``work_dir``).
    """
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    name = f"vb_bench_{os.getpid()}"
    if kind == "postgres":
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        url = f"postgres://postgres@127.0.0.1:5432/{name}"
    elif kind == "sqlite":
        url = f"sqlite:///{work_dir / 'bench.sqlite3'}"
    else:
        raise ValueError(f"unknown database kind {kind!r}")
    try:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "voicebot.settings", "DATABASE_URL": url}
        env.pop("VOICEBOT_TESTING", None)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        yield url
    finally:
        if kind == "postgres":
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            import psycopg

            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def django_on(database_url: str) -> None:
    """Set Django up in this process on ``database_url`` (to read the call logs back)."""
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicebot.settings")
    import django

    django.setup()


def work_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="vb-bench-"))


# --- figures ---------------------------------------------------------------------------------


def read_frame_timing(path: Path) -> dict[str, tuple[list[int], list[int]]]:
    """The timing file of ``MEDIA_FRAME_TIMING_FILE``: ``{call_sid: (sent_ns, delay_ns)}``."""
    out: dict[str, tuple[list[int], list[int]]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out[rec["call_sid"]] = (rec["sent_ns"], rec["delay_ns"])
    return out


def send_lag_ms(sent_ns: Sequence[int], lo_ns: int, hi_ns: int) -> list[float]:
    """How late each media frame left the load generator against its 20 ms schedule (ms), for the
    frames sent in [lo_ns, hi_ns). The schedule is anchored on the call's least-late frame."""
    if not sent_ns:
        return []
    base = min(ns - k * FRAME_NS for k, ns in enumerate(sent_ns))
    return [(ns - base - k * FRAME_NS) / 1e6 for k, ns in enumerate(sent_ns) if lo_ns <= ns < hi_ns]
