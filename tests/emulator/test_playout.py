"""The emulator's model of Twilio's outbound buffer: real-time play-out, marks, clear."""

from calls.emulator.playout import Playout


def test_mark_with_nothing_buffered_echoes_at_once():
    p = Playout()
    assert p.mark("m0") == ["m0"]


def test_mark_echoes_only_after_its_audio_has_played_in_real_time():
    p = Playout()
    p.media(b"\x00" * 1600)  # 200 ms
    assert p.mark("m1") == []
    half = p.advance(100)
    assert half.marks == [] and half.bot_ms == 100 and p.buffered_ms == 100
    rest = p.advance(200)
    assert rest.marks == ["m1"] and rest.bot_ms == 100 and not p.playing


def test_clear_drops_buffered_audio_and_returns_pending_marks_in_order():
    p = Playout()
    for i in range(3):
        p.media(b"\x00" * 800)
        p.mark(f"m{i}")
    first = p.advance(100)
    assert first.marks == ["m0"]
    assert p.clear() == ["m1", "m2"]
    assert not p.playing and p.cleared_bytes == 1600
    after = p.advance(300)
    assert after.bot_ms == 0 and after.marks == [] and set(after.audio) == {0xFF}


def test_played_audio_is_exactly_eight_bytes_per_ms_with_silence_in_gaps():
    p = Playout()
    p.media(b"\x01" * 80)  # 10 ms
    out = p.advance(25)
    assert len(out.audio) == 200 and out.audio[:80] == b"\x01" * 80 and out.audio[80:] == b"\xff" * 120


def test_fractional_steps_do_not_drift():
    p = Playout()
    total = sum(len(p.advance(i * 0.3).audio) for i in range(1, 10001))
    assert total == 3000 * 8
