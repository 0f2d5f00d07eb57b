"""The server benchmarks' measuring parts, without a server: the stamp the load generator adds to
media messages (read back by ``media_ws.frame_timing.FrameTiming``, accepted by the parser), the
figures computed from stamps, and the echo ceiling app driven as ASGI in-process.

The benchmarks themselves (``bench.calls_per_process``, ``bench.pipeline_overhead``) take minutes
and are not part of the test suite.
"""

from __future__ import annotations

import asyncio
import json

from bench import loadgen as L
from bench.calls_per_process import clear_reactions_ms, frame_delays_ms, stats_ms
from bench.pipeline_overhead import final_to_first_audio_ms
from media_ws.frame_timing import FrameTiming
from media_ws.protocol import Media, TwilioStreamWriter, parse_inbound

MS = 1_000_000  # ns


class _Socket:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)


def test_stamped_media_parses_and_its_stamp_is_what_frame_timing_reads(tmp_path):
    writer = TwilioStreamWriter("MZ" + "0" * 32, "CA" + "1" * 32, "AC" + "2" * 32)
    record = L.CallRecord()
    ws = _Socket()
    sock = L.StampedSocket(ws, record)
    asyncio.run(sock.send(writer.connected()))
    asyncio.run(sock.send(writer.media(b"\x7f" * 160, 0)))
    assert ws.sent[0] == writer.connected()  # only media messages are stamped
    media_text = ws.sent[1]
    event = parse_inbound(media_text)
    assert type(event) is Media and event.payload == b"\x7f" * 160  # the extra field is ignored
    assert json.loads(media_text)["bench_ns"] == record.media_sent_ns[0]

    timing = FrameTiming(str(tmp_path / "t.jsonl"))
    timing.record(media_text)
    timing.record(writer.media(b"\xff" * 160, 20))  # unstamped: not recorded
    timing.write("CA1")
    line = json.loads((tmp_path / "t.jsonl").read_text())
    assert line["call_sid"] == "CA1" and line["sent_ns"] == record.media_sent_ns
    assert len(line["delay_ns"]) == 1 and line["delay_ns"][0] > 0


def test_unstamped_socket_sends_the_message_unchanged():
    writer = TwilioStreamWriter("MZ" + "0" * 32, "CA" + "1" * 32, "AC" + "2" * 32)
    record = L.CallRecord()
    ws = _Socket()
    text = writer.media(b"\x7f" * 160, 0)
    asyncio.run(L.StampedSocket(ws, record, stamp=False).send(text))
    assert ws.sent == [text] and len(record.media_sent_ns) == 1


def test_frame_delays_keep_only_the_window_and_the_given_calls():
    timing = {"A": ([100, 200, 300], [1 * MS, 2 * MS, 3 * MS]), "B": ([150], [9 * MS])}
    assert frame_delays_ms(timing, {"A"}, 150, 301) == [2.0, 3.0]
    assert sorted(frame_delays_ms(timing, {"A", "B", "C"}, 0, 10**9)) == [1.0, 2.0, 3.0, 9.0]


def test_clear_reaction_is_measured_from_the_deciding_frame():
    base = 10**12
    rec = L.CallRecord(call_sid="CA1", media_sent_ns=[base + k * 20 * MS for k in range(50)])
    # decided_ms 100 = the end of frame 4 (call ms 80-100), sent at base + 80 ms
    rec.arrivals = [(base + 83 * MS, "clear"), (base + 500 * MS, "clear")]
    barge_ins = [
        ("CA1", {"cause": "speech", "decided_ms": 100}),
        ("CA1", {"cause": "transcript"}),  # no deciding frame: not counted
        ("CA1", {"cause": "speech", "decided_ms": 600}),  # frame 29, sent at +580 ms: no clear after it
        ("CA9", {"cause": "speech", "decided_ms": 100}),  # not one of ours
    ]
    timing = {"CA1": (rec.media_sent_ns, [k * MS for k in range(50)])}
    reactions, missing, handled = clear_reactions_ms({"CA1": rec}, barge_ins, 0, 2**63, timing)
    assert reactions == [3.0] and missing == 1 and handled == [4.0]
    # outside the window: not counted at all
    assert clear_reactions_ms({"CA1": rec}, barge_ins, base + 90 * MS, base + 200 * MS)[:2] == ([], 0)


def test_send_lag_is_against_the_20_ms_schedule():
    sent = [0, 20 * MS, 45 * MS, 60 * MS]  # the third frame left 5 ms late
    assert L.send_lag_ms(sent, 0, 10**9) == [0.0, 0.0, 5.0, 0.0]


def test_final_to_first_audio_skips_a_replaced_response():
    finals = [100 * MS, 200 * MS, 300 * MS]
    media = [250 * MS, 310 * MS]  # the first final's response never spoke before the second final
    total, to_tts = final_to_first_audio_ms(finals, media, speak_ns=[203 * MS, 304 * MS])
    assert total == [50.0, 10.0] and to_tts == [3.0, 4.0]


def test_stats_ms_on_empty_and_values():
    assert stats_ms([])["p50"] is None and stats_ms([])["count"] == 0
    s = stats_ms([1.0, 2.0, 3.0])
    assert (s["count"], s["p50"], s["max"]) == (3, 2.0, 3.0)


def test_echo_app_echoes_every_media_frame_and_writes_its_timing(tmp_path, monkeypatch):
    from bench.echo_asgi import application

    path = tmp_path / "echo.jsonl"
    monkeypatch.setenv("MEDIA_FRAME_TIMING_FILE", str(path))
    writer = TwilioStreamWriter("MZ" + "0" * 32, "CA" + "1" * 32, "AC" + "2" * 32)
    frames = [writer.media(b"\x7f" * 160, 20 * k) for k in range(5)]
    stamped = [f'{t[:-1]},"bench_ns":{1000 + k}}}' for k, t in enumerate(frames)]
    inbox = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": writer.connected()},
        {"type": "websocket.receive", "text": writer.start({})},
        *({"type": "websocket.receive", "text": t} for t in stamped),
        {"type": "websocket.receive", "text": "not json"},  # dropped, the stream goes on
        {"type": "websocket.receive", "text": writer.stop()},
    ]
    outbox: list[dict] = []

    async def receive() -> dict:
        return inbox.pop(0)

    async def send(message: dict) -> None:
        outbox.append(message)

    asyncio.run(application({"type": "websocket", "path": "/media-stream"}, receive, send))
    kinds = [m["type"] for m in outbox]
    assert kinds == ["websocket.accept", *["websocket.send"] * 5, "websocket.close"]
    assert all(json.loads(m["text"])["streamSid"] == writer.stream_sid for m in outbox[1:6])
    line = json.loads(path.read_text())
    assert line["call_sid"] == writer.call_sid and line["sent_ns"] == [1000, 1001, 1002, 1003, 1004]
