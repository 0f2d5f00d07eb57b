"""Pipeline overhead: what our own code adds between the providers and the wire, with zero-latency
fakes.

``python -m bench.pipeline_overhead [--quick] [--cycles N] [--calls N]``

The real server (``daphne voicebot.asgi:application``, pinned like ``bench.calls_per_process``)
with STT and TTS on the Deepgram fake (``bench.fake_services`` with ``pacing="zero"``: no
time-to-first-byte, the whole TTS body at once) and the scripted agent with no delay as the LLM.
One call at a time (an unloaded server); each call repeats a cycle: the bot speaks, the caller
barges in with a real utterance after 0.6–1.2 s, stops, and the bot answers.

Measured on ``CLOCK_MONOTONIC`` (``time.monotonic_ns``), in the load generator's process, which
also runs the fake (in a background thread), so both ends share one clock:

- **(a) STT final → first audio on the wire**: from the moment the fake sends the ``Results``
  message with ``speech_final: true`` that ends an utterance (stamped as it is handed to the
  socket) to the arrival at the client of the first bot ``media`` message after it. A final
  followed by another final before any audio is skipped (its response was replaced).
- **(b) barge-in decision → ``clear`` on the wire**: from the send of the caller's media frame on
  which the server decided the barge-in (the ``barge_in`` event's ``decided_ms`` in the call log:
  frame k covers call ms [20k, 20k + 20)) to the arrival of ``clear`` at the client.

Also reported from the call log: the server's own ``clear_send_ms`` (the ``await`` of the clear),
and per bot turn ``first_audio_ms - stt_final_ms`` on the call clock (1 ms resolution).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import loadgen as L
from bench.calls_per_process import GREETING, stats_ms
from bench.common import (
    QUICK_RESULTS,
    RESULTS,
    command_line,
    machine_info,
    markdown_table,
    now_iso,
    write_json,
)

NAME = "pipeline_overhead"
PACKAGES = (
    "daphne",
    "channels",
    "django",
    "websockets",
    "deepgram-sdk",
    "httpx",
    "aiohttp",
    "webrtcvad-wheels",
)


@dataclass(frozen=True)
class Plan:
    calls: int = 4
    cycles: int = 30  # barge-in + answer cycles per call
    barge_after_ms: tuple[int, int] = (600, 1200)
    clip_ms: tuple[int, int] = (700, 2600)
    database: str = "postgres"
    seed: int = 3


QUICK = Plan(calls=1, cycles=4)


class _StampedMessages(list):  # type: ignore[type-arg]
    """A listen session's ``server_messages``: each message the fake sends is stamped as it goes."""

    def __init__(self, sink: list[tuple[int, dict[str, Any]]]) -> None:
        super().__init__()
        self._sink = sink

    def append(self, message: dict[str, Any]) -> None:  # type: ignore[override]
        self._sink.append((time.monotonic_ns(), message))
        super().append(message)


class _StampedSessions(list):  # type: ignore[type-arg]
    def __init__(self, sink: list[tuple[int, dict[str, Any]]]) -> None:
        super().__init__()
        self._sink = sink

    def append(self, session: Any) -> None:  # type: ignore[override]
        session.server_messages = _StampedMessages(self._sink)
        super().append(session)


class _StampedRequests(list):  # type: ignore[type-arg]
    """The fake's ``speak_requests``: stamped when a TTS request has arrived (its body read)."""

    def __init__(self, sink: list[int]) -> None:
        super().__init__()
        self._sink = sink

    def append(self, request: Any) -> None:  # type: ignore[override]
        self._sink.append(time.monotonic_ns())
        super().append(request)


def stamp_fake(fake: Any) -> tuple[list[tuple[int, dict[str, Any]]], list[int]]:
    """Stamp every message ``fake`` (a ``FakeDeepgram``) sends on its listen sockets, and every
    TTS request it receives, from now on. Returns the lists the ``(monotonic ns, message)`` pairs
    and the request times (ns) go to."""
    sink: list[tuple[int, dict[str, Any]]] = []
    speak: list[int] = []
    fake.listen_sessions = _StampedSessions(sink)
    fake.speak_requests = _StampedRequests(speak)
    return sink, speak


def finals_ns(sink: list[tuple[int, dict[str, Any]]], lo: int, hi: int) -> list[int]:
    """When the fake sent each utterance-ending result (``speech_final`` with words) in [lo, hi)."""
    out = []
    for ns, m in list(sink):
        if lo <= ns < hi and m.get("type") == "Results" and m.get("speech_final"):
            alts = m.get("channel", {}).get("alternatives") or [{}]
            if (alts[0].get("transcript") or "").strip():
                out.append(ns)
    return sorted(out)


def final_to_first_audio_ms(
    finals: list[int], media_ns: list[int], speak_ns: list[int] | None = None
) -> tuple[list[float], list[float]]:
    """For each final: ms until the first bot media that arrived after it, unless another final
    came first (the response was replaced) or no media came at all. Also, for those, ms until the
    first TTS request reached the fake (``speak_ns``): the part spent in our server before TTS."""
    media = sorted(media_ns)
    speak = sorted(speak_ns or [])
    out: list[float] = []
    to_tts: list[float] = []
    for i, f in enumerate(finals):
        first = next((m for m in media if m > f), None)
        if first is None:
            continue
        if i + 1 < len(finals) and finals[i + 1] < first:
            continue
        out.append((first - f) / 1e6)
        req = next((s for s in speak if f < s < first), None)
        if req is not None:
            to_tts.append((req - f) / 1e6)
    return out, to_tts


async def _cycles(
    stream: Any, record: L.CallRecord, rng: random.Random, stop: asyncio.Event, *, plan: Plan
) -> None:
    """The caller: ``plan.cycles`` times, interrupt the bot's speech with one utterance."""
    clips = [c for c in L.caller_clips() if plan.clip_ms[0] * 8 <= len(c) <= plan.clip_ms[1] * 8]
    for _ in range(plan.cycles):
        try:
            await stream.wait_bot_speaking(timeout_s=10)
        except TimeoutError:
            pass
        await stream.wait_clock(stream.clock_ms + rng.randint(*plan.barge_after_ms))
        i = rng.randrange(len(clips))
        record.said.append((stream.clock_ms, i))
        await stream.say(clips[i])
        # Let the utterance end (endpointing) and the answer start before the next cycle.
        await stream.wait_clock(stream.clock_ms + 600)
    stop.set()


def _call_log(sids: set[str]) -> dict[str, Any]:
    from calls.models import CallEvent, EventKind, Turn

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if CallEvent.objects.filter(call__call_sid__in=sids, kind=EventKind.STREAM_STOP).count() >= len(sids):
            break
        time.sleep(0.3)
    barge_ins = list(
        CallEvent.objects.filter(call__call_sid__in=sids, kind=EventKind.BARGE_IN).values_list(
            "call__call_sid", "data"
        )
    )
    turns = list(
        Turn.objects.filter(
            call__call_sid__in=sids, role="bot", stt_final_ms__isnull=False, first_audio_ms__isnull=False
        ).values_list("stt_final_ms", "llm_first_token_ms", "tts_first_byte_ms", "first_audio_ms")
    )
    return {"barge_ins": barge_ins, "turns": turns}


def run(plan: Plan, *, log: Any) -> dict[str, Any]:
    from bench.calls_per_process import clear_reactions_ms
    from bench.fake_services import start_deepgram

    cpus = L.cpu_plan()
    L.pin_self(cpus["load"])
    L.caller_clips()
    work = L.work_dir()
    fake = start_deepgram("zero")
    sink, speak = stamp_fake(fake)
    records: list[L.CallRecord] = []
    try:
        with L.scratch_database(plan.database, work) as db_url:
            L.django_on(db_url)
            env = {
                **fake.env(),
                "STT_ENGINE": "deepgram",
                "TTS_ENGINE": "deepgram",
                "LLM_ENGINE": "scripted",
                "OFFLINE_LLM_FIRST_DELTA_MS": "0",
                "OFFLINE_LLM_DELTA_MS": "0",
                "DATABASE_URL": db_url,
                "DEBUG": "false",
                "TWILIO_AUTH_TOKEN": "",
                "DEFAULT_GREETING": GREETING,
                "REDIS_URL": "",
                "MEDIA_FRAME_TIMING_FILE": str(work / "frames.jsonl"),
            }
            with L.ServerProcess(
                "voicebot.asgi:application", env, cpus=cpus["server"], log_dir=work, name="po"
            ) as srv:

                async def one(seed: int, p: Plan) -> L.CallRecord:
                    async def script(
                        stream: Any, rec: L.CallRecord, rng: random.Random, stop: asyncio.Event
                    ) -> None:
                        await _cycles(stream, rec, rng, stop, plan=p)

                    return await L.run_call(
                        srv.ws_url, L.CallRecord(), asyncio.Event(), seed=seed, script=script
                    )

                log("warm-up call ...")
                asyncio.run(one(0, Plan(calls=1, cycles=2)))
                for c in range(plan.calls):
                    log(f"call {c + 1}/{plan.calls}: {plan.cycles} barge-in/answer cycles ...")
                    records.append(asyncio.run(one(plan.seed * 1000 + c, plan)))
                    if records[-1].error:
                        log(f"  call failed: {records[-1].error}")
                sids = {r.call_sid for r in records if r.call_sid}
                timing = {}
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and not sids <= set(timing):
                    timing = L.read_frame_timing(work / "frames.jsonl")
                    time.sleep(0.3)
                calllog = _call_log(sids)
            server_log = srv.log()
    finally:
        fake.stop()
    shutil.rmtree(work, ignore_errors=True)

    a: list[float] = []
    a_tts: list[float] = []
    for r in records:
        total, to_tts = final_to_first_audio_ms(
            finals_ns(sink, r.started_ns, r.ended_ns), r.kinds("media"), speak
        )
        a += total
        a_tts += to_tts
    by_sid = {r.call_sid: r for r in records}
    b, missing, handled = clear_reactions_ms(by_sid, calllog["barge_ins"], 0, 2**63 - 1, timing)
    clear_send = [d["clear_send_ms"] for _, d in calllog["barge_ins"] if d.get("clear_send_ms") is not None]
    turns = calllog["turns"]
    return {
        "calls": len(records),
        "calls_failed": sum(1 for r in records if r.error),
        "cycles_per_call": plan.cycles,
        "a_stt_final_to_first_audio_ms": stats_ms(a),
        "a_stt_final_to_tts_request_ms": stats_ms(a_tts),
        "b_barge_in_decision_to_clear_ms": stats_ms(b),
        "b_clear_missing": missing,
        "b_deciding_frame_handled_ms": stats_ms(handled),
        "clear_send_ms_in_server": stats_ms(clear_send),
        "call_log_turns": {
            "count": len(turns),
            "stt_final_to_first_audio_ms": stats_ms([fa - sf for sf, _, _, fa in turns]),
            "stt_final_to_llm_first_token_ms": stats_ms(
                [lt - sf for sf, lt, _, _ in turns if lt is not None]
            ),
            "llm_first_token_to_tts_first_byte_ms": stats_ms(
                [tb - lt for _, lt, tb, _ in turns if lt is not None and tb is not None]
            ),
            "tts_first_byte_to_first_audio_ms": stats_ms(
                [fa - tb for _, _, tb, fa in turns if tb is not None]
            ),
        },
        "barge_ins": {
            "speech": sum(1 for _, d in calllog["barge_ins"] if d.get("cause") == "speech"),
            "other": sum(1 for _, d in calllog["barge_ins"] if d.get("cause") != "speech"),
        },
        "server_log_errors": server_log.count("Traceback") + server_log.count(" ERROR "),
        "pinning": cpus,
    }


def table(res: dict[str, Any]) -> str:
    rows = []
    for label, key in (
        ("(a) STT final sent → first bot audio arrives", "a_stt_final_to_first_audio_ms"),
        ("(a) of which: STT final sent → TTS request at the fake", "a_stt_final_to_tts_request_ms"),
        ("(b) deciding frame sent → `clear` arrives", "b_barge_in_decision_to_clear_ms"),
        ("(b) of which: deciding frame sent → handled in the server", "b_deciding_frame_handled_ms"),
        ("server's `clear_send_ms` (await of the clear)", "clear_send_ms_in_server"),
    ):
        s = res[key]
        rows.append([label, s["count"], s["p50"], s["p90"], s["p99"], s["max"]])
    turns = res["call_log_turns"]
    for label, key in (
        ("call log: STT final → first audio (1 ms steps)", "stt_final_to_first_audio_ms"),
        ("call log: STT final → LLM first token", "stt_final_to_llm_first_token_ms"),
        ("call log: LLM first token → TTS first byte", "llm_first_token_to_tts_first_byte_ms"),
        ("call log: TTS first byte → first audio sent", "tts_first_byte_to_first_audio_ms"),
    ):
        s = turns[key]
        rows.append([label, s["count"], s["p50"], s["p90"], s["p99"], s["max"]])
    return markdown_table(["interval (ms)", "n", "p50", "p90", "p99", "max"], rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description="Pipeline overhead with zero-latency fakes, through Daphne.")
    ap.add_argument("--quick", action="store_true", help="smoke run: one call, 4 cycles")
    ap.add_argument("--calls", type=int)
    ap.add_argument("--cycles", type=int)
    ap.add_argument("--database", choices=("postgres", "sqlite"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    over: dict[str, Any] = {}
    if args.calls:
        over["calls"] = args.calls
    if args.cycles:
        over["cycles"] = args.cycles
    over["database"] = args.database or ("postgres" if L.postgres_available() else "sqlite")
    plan = Plan(**{**asdict(plan), **over})

    def log(msg: str) -> None:
        print(msg, flush=True)

    data: dict[str, Any] = {
        "benchmark": NAME,
        "command": command_line(),
        "started": now_iso(),
        "machine": machine_info(PACKAGES),
        "plan": asdict(plan),
    }
    data["results"] = run(plan, log=log)
    data["finished"] = now_iso()
    out = args.out or ((QUICK_RESULTS if args.quick else RESULTS) / f"{NAME}.json")
    write_json(out, data)
    text = table(data["results"])
    out.with_suffix(".md").write_text(text + "\n")
    print()
    print(text)
    print(f"\nwrote {out}")
    return data


if __name__ == "__main__":
    main()
