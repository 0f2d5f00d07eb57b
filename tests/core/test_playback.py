"""PlaybackTracker: chunks and marks out, echoes in, clear, and what the caller heard."""

from __future__ import annotations

import pytest

from media_ws.playback import MarkEcho, PlaybackTracker

SECOND = 8000  # bytes of μ-law at 8 kHz


def audio(n: int, value: int = 0x55) -> bytes:
    return bytes([value]) * n


def speak(tracker: PlaybackTracker, generation: int, text: str, nbytes: int) -> list[str]:
    """One whole segment: begin, all its audio, end. Returns the mark names in send order."""
    tracker.begin_segment(generation, text)
    names = [name for _, name in tracker.audio_out(generation, audio(nbytes))]
    tracker.end_segment(generation)
    return names


def echo_all(tracker: PlaybackTracker, names: list[str]) -> list[MarkEcho]:
    return [tracker.on_mark(name) for name in names]


# --- chunking ----------------------------------------------------------------------------------


def test_audio_is_cut_into_chunks_of_at_most_200_ms_each_with_its_own_mark():
    t = PlaybackTracker()
    t.begin_segment(1, "Hello there.")
    data = bytes(i % 256 for i in range(4000))
    out = t.audio_out(1, data)
    assert [len(chunk) for chunk, _ in out] == [1600, 1600, 800]
    assert b"".join(chunk for chunk, _ in out) == data
    names = [name for _, name in out]
    assert len(set(names)) == 3 and all(name.startswith("1.") for name in names)
    assert t.sent_ms(1) == 500 and t.pending_ms() == 500 and t.is_playing


def test_mark_names_stay_unique_across_segments_and_generations():
    t = PlaybackTracker(max_chunk_bytes=160)
    names = speak(t, 1, "a", 800) + speak(t, 1, "b", 800) + speak(t, 2, "c", 800) + speak(t, 1, "d", 160)
    assert len(names) == len(set(names)) == 16


def test_chunk_size_is_configurable_and_must_be_positive():
    t = PlaybackTracker(max_chunk_bytes=160)
    t.begin_segment(1, "x")
    assert [len(c) for c, _ in t.audio_out(1, audio(500))] == [160, 160, 160, 20]
    with pytest.raises(ValueError, match="max_chunk_bytes"):
        PlaybackTracker(max_chunk_bytes=0)


def test_empty_audio_sends_nothing_and_changes_nothing():
    t = PlaybackTracker()
    t.begin_segment(1, "x")
    assert t.audio_out(1, b"") == []
    assert not t.is_playing and t.sent_ms(1) == 0 and t.is_drained(1)


def test_audio_out_without_an_open_segment_is_refused():
    t = PlaybackTracker()
    with pytest.raises(ValueError, match="generation 1"):
        t.audio_out(1, audio(160))  # never started
    t.begin_segment(1, "x")
    t.end_segment(1)
    with pytest.raises(ValueError, match="no open segment"):
        t.audio_out(1, audio(160))  # ended
    assert not t.is_playing and t.sent_ms(1) == 0


# --- echoes ------------------------------------------------------------------------------------


def test_marks_echoed_in_order_count_as_played_and_drain_on_the_last():
    t = PlaybackTracker()
    names = speak(t, 1, "Hello there, how are you?", 4000)
    echoes = echo_all(t, names)
    assert [e.played for e in echoes] == [True, True, True]
    assert [e.drained for e in echoes] == [False, False, True]
    assert all(e.generation == 1 and e.name == n for e, n in zip(echoes, names, strict=True))
    assert t.played_ms(1) == t.sent_ms(1) == 500
    assert not t.is_playing and t.pending_ms() == 0 and t.is_drained(1)


def test_pending_ms_falls_as_marks_are_echoed():
    t = PlaybackTracker()
    names = speak(t, 1, "x", 4000)
    seen = [t.pending_ms()]
    for name in names:
        t.on_mark(name)
        seen.append(t.pending_ms())
    assert seen == [500, 300, 100, 0]


def test_unknown_and_duplicate_marks_are_ignored():
    t = PlaybackTracker()
    names = speak(t, 1, "x", 3200)
    assert t.on_mark("nonsense") is None
    assert t.on_mark("1.999") is None
    assert t.on_mark(names[0]).played
    assert t.on_mark(names[0]) is None  # duplicate
    assert t.played_ms(1) == 200 and t.pending_ms() == 200


def test_marks_echoed_out_of_order_count_each_chunk_exactly_once():
    t = PlaybackTracker(max_chunk_bytes=800)
    names = speak(t, 1, "one two three four", 3200)
    echoes = echo_all(t, [names[2], names[0], names[3], names[1]])
    assert all(e.played for e in echoes)
    assert [e.drained for e in echoes] == [False, False, False, True]
    assert t.played_ms(1) == t.sent_ms(1) == 400
    assert t.heard_text(1) == "one two three four"
    assert not t.is_playing and t.is_drained(1)


# --- clear -------------------------------------------------------------------------------------


def test_marks_pending_at_clear_are_reported_not_played():
    t = PlaybackTracker()
    names = speak(t, 1, "A long answer that the caller interrupts.", 8000)  # 5 chunks
    t.on_mark(names[0])
    t.on_mark(names[1])
    assert t.clear() == names[2:]
    echoes = echo_all(t, names[2:])  # Twilio echoes every pending mark right after clear
    assert [e.played for e in echoes] == [False, False, False]
    assert [e.drained for e in echoes] == [False, False, True]
    assert t.played_ms(1) == 400 and t.sent_ms(1) == 1000


def test_is_playing_becomes_false_at_clear_before_any_echo():
    t = PlaybackTracker()
    speak(t, 1, "x", 8000)
    assert t.is_playing and t.pending_ms() == 1000
    t.clear()
    assert not t.is_playing and t.pending_ms() == 0
    assert not t.is_drained(1)  # the cleared marks have not come back yet


def test_marks_sent_after_clear_are_normal_and_count_as_played():
    t = PlaybackTracker()
    old = speak(t, 1, "Old answer.", 3200)
    assert t.clear() == old
    new = speak(t, 2, "New answer.", 1600)
    assert t.is_playing and t.pending_ms() == 200
    old_echoes = echo_all(t, old)
    new_echo = t.on_mark(new[0])
    assert [e.played for e in old_echoes] == [False, False]
    assert new_echo == MarkEcho(new[0], 2, played=True, drained=True)
    assert t.heard_text(2) == "New answer." and t.heard_text(1) == ""
    assert t.clear() == []  # nothing left to clear


def test_old_generation_echoes_after_a_new_response_started_do_not_disturb_it():
    t = PlaybackTracker()
    g1 = speak(t, 1, "First response.", 3200)
    t.clear()
    t.begin_segment(2, "Second response.")
    g2 = [name for _, name in t.audio_out(2, audio(3200))]
    first = t.on_mark(g1[0])
    assert first.generation == 1 and not first.played and not first.drained
    assert t.is_playing and t.pending_ms() == 400  # only generation 2 is queued
    t.on_mark(g2[0])
    last_g1 = t.on_mark(g1[1])
    assert last_g1.generation == 1 and last_g1.drained
    assert not t.is_drained(2) and t.played_ms(2) == 200 and t.played_ms(1) == 0
    t.on_mark(g2[1])
    t.end_segment(2)
    assert t.is_drained(2) and t.heard_text(2) == "Second response."


# --- heard text --------------------------------------------------------------------------------


def test_heard_text_keeps_the_leading_words_in_proportion_to_the_audio_played():
    t = PlaybackTracker(max_chunk_bytes=100)
    text = "alpha beta gamma delta"  # 22 characters; words end at 5, 10, 16, 22
    names = speak(t, 1, text, 2200)  # 22 chunks: one chunk per character
    echo_all(t, names[:10])
    assert t.heard_text(1) == "alpha beta"
    echo_all(t, names[10:16])
    assert t.heard_text(1) == "alpha beta gamma"
    echo_all(t, names[16:])
    assert t.heard_text(1) == text


def test_heard_text_never_ends_in_the_middle_of_a_word():
    t = PlaybackTracker(max_chunk_bytes=100)
    names = speak(t, 1, "alpha beta gamma delta", 2200)
    echo_all(t, names[:9])  # 9/22 of the audio: "beta" (ends at 10) is not finished
    assert t.heard_text(1) == "alpha"
    t.clear()
    echo_all(t, names[9:])
    assert t.heard_text(1) == "alpha"
    assert t.heard_text(1) != "alpha b"


def test_heard_text_keeps_punctuation_with_its_word():
    t = PlaybackTracker(max_chunk_bytes=100)
    names = speak(t, 1, "Sure, I can help.", 1700)  # 17 characters, 17 chunks
    echo_all(t, names[:5])
    assert t.heard_text(1) == "Sure,"
    echo_all(t, names[5:11])
    assert t.heard_text(1) == "Sure, I can"


def test_heard_text_is_whole_segments_then_part_of_the_interrupted_one():
    t = PlaybackTracker(max_chunk_bytes=100)
    first = speak(t, 1, "  Hello there.", 400)
    second = speak(t, 1, "I can move your appointment to Friday. ", 3900)
    third = speak(t, 1, "Does that work?", 800)
    echo_all(t, first + second[:20])  # about half of the second sentence
    t.clear()
    echo_all(t, second[20:] + third)
    assert t.heard_text(1) == "Hello there. I can move your"
    assert t.played_ms(1) == 300 and t.sent_ms(1) == 637


def test_nothing_played_means_nothing_heard():
    t = PlaybackTracker()
    names = speak(t, 1, "Hello there.", 1600)
    assert t.heard_text(1) == ""
    t.clear()
    t.on_mark(names[0])
    assert t.heard_text(1) == ""


def test_open_segment_is_judged_by_the_audio_received_so_far():
    t = PlaybackTracker(max_chunk_bytes=100)
    t.begin_segment(1, "one two three four")  # 18 characters
    names = [n for _, n in t.audio_out(1, audio(900))]
    echo_all(t, names[:4])  # 4/9 of what arrived: 8 characters
    assert t.heard_text(1) == "one two"
    echo_all(t, names[4:])
    assert t.heard_text(1) == "one two three four"  # documented approximation while TTS lags


def test_a_segment_with_no_audio_is_heard_once_closed_and_reached():
    t = PlaybackTracker()
    a = speak(t, 1, "First.", 800)
    speak(t, 1, "(silent)", 0)
    c = speak(t, 1, "Third.", 800)
    echo_all(t, a)
    assert t.heard_text(1) == "First. (silent)"
    echo_all(t, c)
    assert t.heard_text(1) == "First. (silent) Third."
    t.begin_segment(1, "Still coming")  # open, no audio yet: not heard
    assert t.heard_text(1) == "First. (silent) Third."


def test_begin_segment_closes_the_previous_open_segment():
    t = PlaybackTracker()
    t.begin_segment(1, "One.")
    one = [n for _, n in t.audio_out(1, audio(800))]
    t.begin_segment(1, "Two.")  # no end_segment for "One."
    two = [n for _, n in t.audio_out(1, audio(800))]
    echo_all(t, one + two)
    assert t.heard_text(1) == "One. Two."
    assert t.sent_ms(1) == t.played_ms(1) == 200


# --- generations and memory --------------------------------------------------------------------


def test_a_generation_that_was_never_started_is_empty():
    t = PlaybackTracker()
    assert (t.sent_ms(5), t.played_ms(5), t.heard_text(5), t.is_drained(5)) == (0, 0, "", True)
    t.end_segment(5)
    t.forget(5)
    assert not t.is_playing


def test_forget_drops_texts_but_keeps_queued_audio_tracked():
    t = PlaybackTracker()
    names = speak(t, 1, "Hello.", 1600)
    t.forget(1)
    assert t.heard_text(1) == "" and t.sent_ms(1) == 0
    assert t.is_playing and t.pending_ms() == 200
    assert t.on_mark(names[0]) == MarkEcho(names[0], 1, played=True, drained=True)
    assert not t.is_playing


def test_abandoned_marks_stop_counting_as_playing_and_their_late_echoes_are_unknown():
    t = PlaybackTracker()
    lost = speak(t, 1, "Hello there.", 4000)  # 500 ms: three marks Twilio never echoes
    kept = speak(t, 2, "Next.", 800)
    assert t.pending_ms() == 600
    assert t.abandon(1) == 3
    assert t.is_playing and t.pending_ms() == 100  # generation 2's audio is still queued
    assert t.played_ms(1) == 0 and t.heard_text(1) == ""  # lost is not played
    assert t.on_mark(lost[0]) is None
    assert echo_all(t, kept) == [MarkEcho(kept[0], 2, played=True, drained=True)]
    assert not t.is_playing and t.abandon(1) == 0


def test_abandoning_cleared_marks_does_not_count_their_audio_twice():
    t = PlaybackTracker()
    speak(t, 1, "Hello there.", 1600)
    t.clear()
    assert t.abandon(1) == 1 and t.pending_ms() == 0 and not t.is_playing
    names = speak(t, 2, "Again.", 1600)
    assert t.pending_ms() == 200 and t.on_mark(names[0]).played


def test_long_calls_keep_only_recent_responses():
    t = PlaybackTracker()
    total = PlaybackTracker.MAX_RESPONSES * 3
    for g in range(1, total + 1):
        echo_all(t, speak(t, g, f"Answer {g}.", 160))
    assert t.heard_text(1) == ""  # pruned
    assert t.heard_text(total) == f"Answer {total}."
    kept = [g for g in range(1, total + 1) if t.heard_text(g)]
    assert len(kept) == PlaybackTracker.MAX_RESPONSES
    assert kept == list(range(total - PlaybackTracker.MAX_RESPONSES + 1, total + 1))


def test_pruning_never_drops_a_response_whose_audio_is_still_queued():
    t = PlaybackTracker()
    queued = speak(t, 1, "Still playing.", 1600)
    for g in range(2, PlaybackTracker.MAX_RESPONSES + 10):
        echo_all(t, speak(t, g, "Done.", 160))
    assert t.sent_ms(1) == 200 and not t.is_drained(1)
    t.on_mark(queued[0])
    assert t.heard_text(1) == "Still playing." and t.is_drained(1)


def test_a_new_response_is_kept_even_when_every_older_one_is_still_queued():
    t = PlaybackTracker()
    for g in range(1, PlaybackTracker.MAX_RESPONSES + 1):
        speak(t, g, f"Queued {g}.", 160)  # never echoed: nothing may be pruned
    newest = PlaybackTracker.MAX_RESPONSES + 1
    names = speak(t, newest, "Newest.", 160)
    t.on_mark(names[0])
    assert t.heard_text(newest) == "Newest." and t.sent_ms(newest) == 20
    assert all(t.sent_ms(g) == 20 for g in range(1, newest))
