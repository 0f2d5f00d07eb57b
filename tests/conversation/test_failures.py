"""Provider failures mid-call: an error event, the caller still hears the bot, nothing is lost.

Each case breaks one engine's fake in one way (auth, outage, timeout, a drop mid-stream) and runs a
call in which the caller asks one question. Whatever broke, the caller's words are in the
transcript, the bot says something (the reply through a fallback, or an apology) within a bounded
silence (the failing engine's timeout, when the fault costs one, plus a margin), and the failure is
in the call's events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings

from calls.models import EventKind
from tests.conversation.conftest import Conversation, call_log
from tests.live.conftest import db, fixture_audio

pytestmark = pytest.mark.django_db(transaction=True)

REPLY = ["We open ", "at nine ", "in the morning, ", "and close ", "at six."]
REPLY_TEXT = "".join(REPLY).strip()


def llm_auth(c: Conversation, s: Any) -> None:
    c.groq.error_status = 401


def llm_outage(c: Conversation, s: Any) -> None:
    c.groq.error_status = 500


def llm_timeout(c: Conversation, s: Any) -> None:
    s.GROQ_FIRST_TOKEN_TIMEOUT_S = 1.0  # GROQ_TIMEOUT_S stays at its 10 s default
    c.groq.first_chunk_delay_s = 12.0


def llm_stall(c: Conversation, s: Any) -> None:
    s.GROQ_FIRST_TOKEN_TIMEOUT_S = 1.0
    c.groq.stall_after_chunks = 1  # 200 and the role chunk, then nothing


def llm_drop(c: Conversation, s: Any) -> None:
    c.groq.chunk_interval_s = 0.05
    c.groq.drop_after_chunks = 3


def stt_auth(c: Conversation, s: Any) -> None:
    c.deepgram.reject_auth = True


def stt_drop(c: Conversation, s: Any) -> None:
    c.deepgram.drop_after_bytes = 8000 * 2  # 2 s into the call: during the greeting's playback


def tts_auth(c: Conversation, s: Any) -> None:
    c.deepgram.speak_status = 401


def tts_outage(c: Conversation, s: Any) -> None:
    c.deepgram.speak_status = 503


def tts_timeout(c: Conversation, s: Any) -> None:
    # Longer than the reply's silence bound: the greeting waits it out once, the reply must not.
    s.DEEPGRAM_TTS_TIMEOUT_S = 4.0
    c.deepgram.speak_ttfb_s = 10.0


def tts_drop(c: Conversation, s: Any) -> None:
    c.deepgram.speak_drop_after_bytes = 1600


#: Silence from the end of the caller's speech to the bot's reply on a healthy call, with room for a
#: loaded test machine: Deepgram's endpointing, the LLM and TTS fakes, the pacing of 20 ms frames.
#: The offline STT (pocketsphinx, after the Deepgram STT refused its key) decodes the utterance
#: first, at up to ~0.45x real time.
BASE_SILENCE_MS = 2500
OFFLINE_STT_SILENCE_MS = 5000

# (fault, the error event's stage and kind — None where the engine recovers on its own —, what the
#  bot's reply turn must say, the most silence before the reply in ms)
CASES: list[tuple[Callable[[Conversation, Any], None], tuple[str, str] | None, str, int]] = [
    (llm_auth, ("llm", "auth"), "apology", BASE_SILENCE_MS),
    (llm_outage, ("llm", "unavailable"), "apology", BASE_SILENCE_MS),
    (llm_timeout, ("llm", "timeout"), "apology", BASE_SILENCE_MS + 1000),  # the first-token deadline
    (llm_stall, ("llm", "timeout"), "apology", BASE_SILENCE_MS + 1000),
    (llm_drop, ("llm", "dropped"), "apology", BASE_SILENCE_MS),
    (stt_auth, ("stt", "auth"), "reply", OFFLINE_STT_SILENCE_MS),  # the offline STT takes over
    (stt_drop, None, "reply", BASE_SILENCE_MS),  # reconnects and re-sends the unfinalized audio
    (tts_auth, ("tts", "auth"), "reply", BASE_SILENCE_MS),  # the offline voice speaks instead
    (tts_outage, ("tts", "unavailable"), "reply", BASE_SILENCE_MS),
    # The greeting waited out the 4 s timeout; the reply, a turn later, must not wait it again.
    (tts_timeout, ("tts", "timeout"), "reply", BASE_SILENCE_MS),
    (tts_drop, ("tts", "dropped"), "reply", BASE_SILENCE_MS),
]


@pytest.mark.parametrize(
    ("fault", "error", "expect", "max_silence_ms"), CASES, ids=[c[0].__name__ for c in CASES]
)
async def test_a_failing_engine_never_leaves_the_caller_in_silence(
    conversation: Conversation,
    settings: Any,
    fault: Any,
    error: tuple[str, str] | None,
    expect: str,
    max_silence_ms: int,
) -> None:
    conversation.deepgram.transcripts = ["What time do you open?"]
    conversation.groq.reply = REPLY
    fault(conversation, settings)
    call = await conversation.place_call(greeting="Hi, this is the clinic. How can I help?")
    async with conversation.stream(call) as stream:
        await stream.wait_bot_speaking(timeout_s=15)
        await stream.wait_bot_silent(for_ms=300, timeout_s=20)
        spoke_until = await stream.say(fixture_audio("clone_test"))
        reply_started = await stream.wait_bot_speaking(timeout_s=25)
        await stream.wait_bot_silent(for_ms=300, timeout_s=30)
        heard_after_question = stream.log.bot_audio_after(spoke_until)

    assert reply_started > spoke_until and heard_after_question > 8000  # over a second of bot audio
    assert reply_started - spoke_until <= max_silence_ms, reply_started - spoke_until
    _, turns, events = await db(call_log, call.id)
    caller = [t for t in turns if t.role == "caller"]
    assert caller and caller[0].text  # the caller's words are kept
    if error is None or error[0] != "stt":
        assert caller[0].text == "What time do you open?" and not caller[0].approximate
    else:  # transcribed by the offline engine, not the Deepgram fake's scripted transcript
        assert caller[0].approximate and caller[0].text != "What time do you open?"
    reply = next(t for t in turns if t.role == "bot" and t.index > caller[0].index)
    if expect == "apology":
        assert reply.text.endswith(django_settings.APOLOGY_LINE)
    else:
        assert reply.text == REPLY_TEXT and not reply.interrupted
    failures = [e for e in events if e.kind == EventKind.ERROR]
    if error is None:
        assert conversation.deepgram.listen_attempts >= 2  # it really did drop and reconnect
        # The reconnect is in the call log; with every unfinalized byte re-sent it lost no audio,
        # so it is a warning, not an error.
        (reconnect,) = [e for e in events if e.data.get("reconnected")]
        assert reconnect.data["stage"] == "stt" and reconnect.data["gap_ms"] == 0
        assert reconnect.kind == EventKind.WARNING and failures == []
    else:
        stage, kind = error
        assert any(e.data.get("stage") == stage and e.data.get("kind") == kind for e in failures), [
            e.data for e in failures
        ]
    if fault is stt_auth:
        fallbacks = [e.data.get("fallback") for e in failures if e.data.get("stage") == "stt"]
        assert "pocketsphinx" in fallbacks, fallbacks
    if error is not None and error[0] == "tts" and error[1] != "dropped":
        # Failed over after the first failure: nothing more went to Deepgram (so no sentence or
        # turn after it waited out a timeout again), and one error event marks the failover.
        assert len(conversation.deepgram.speak_requests) == 1
        (failover,) = [e for e in failures if e.data.get("stage") == "tts"]
        assert failover.data["fallback"] and failover.data["failover_s"] == settings.TTS_FAILOVER_COOLDOWN_S
