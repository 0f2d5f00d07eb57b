"""Streamed LLM text is cut into sentences, or clauses when that gets speech out sooner."""

from media_ws.segmenter import SentenceSegmenter


def feed(seg: SentenceSegmenter, text: str, step: int = 3) -> list[str]:
    out = []
    for i in range(0, len(text), step):
        out += seg.push(text[i : i + step])
    return out + seg.flush()


def test_sentences_come_out_as_soon_as_the_next_word_starts():
    seg = SentenceSegmenter()
    assert seg.push("We open at nine.") == []
    assert seg.push(" We close") == ["We open at nine."]
    assert seg.flush() == ["We close"]


def test_a_long_first_clause_is_spoken_before_the_sentence_ends():
    pieces = feed(
        SentenceSegmenter(), "Sure, thanks for waiting, I can help you reschedule that appointment today."
    )
    assert pieces[0] == "Sure, thanks for waiting,"
    assert " ".join(pieces) == "Sure, thanks for waiting, I can help you reschedule that appointment today."


def test_decimals_and_short_clauses_are_not_cut():
    pieces = feed(SentenceSegmenter(), "It costs 3.50, yes. Anything else?")
    assert pieces == ["It costs 3.50, yes.", "Anything else?"]


def test_nothing_is_lost_whatever_the_delta_sizes():
    text = "Hello there! How are you; I hope well: really. Bye"
    for step in (1, 2, 5, 50):
        assert " ".join(feed(SentenceSegmenter(), text, step)).split() == text.split()
