"""Provider failures mid-call: an error event, the caller still hears the bot, nothing is lost.

Each case breaks one engine's fake in one way (auth, outage, timeout, a drop mid-stream) and runs a
call in which the caller asks one question. Whatever broke, the caller's words are in the
transcript, the bot says something (the reply through a fallback, or an apology), and the
failure is in the call's events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings

from calls.models import Call, EventKind
from tests.conversation.conftest import Conversation
from tests.live.conftest import db, fixture_audio

pytestmark = pytest.mark.django_db(transaction=True)

REPLY = ["We open ", "at nine ", "in the morning, ", "and close ", "at six."]
REPLY_TEXT = "".join(REPLY).strip()


def call_log(call_id: Any) -> tuple[Call, list[Any], list[Any]]:
    call = Call.objects.get(pk=call_id)
    return call, list(call.turns.order_by("index")), list(call.events.order_by("at", "id"))


def llm_auth(c: Conversation, s: Any) -> None:
    c.groq.error_status = 401


def llm_outage(c: Conversation, s: Any) -> None:
    c.groq.error_status = 500


def llm_timeout(c: Conversation, s: Any) -> None:
    s.GROQ_TIMEOUT_S = 1.0
    c.groq.first_chunk_delay_s = 3.0


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
    s.DEEPGRAM_TTS_TIMEOUT_S = 1.0
    c.deepgram.speak_ttfb_s = 3.0


def tts_drop(c: Conversation, s: Any) -> None:
    c.deepgram.speak_drop_after_bytes = 1600


# (fault, the error event's stage and kind — None where the engine recovers on its own —, what the
#  bot's reply turn must say)
CASES: list[tuple[Callable[[Conversation, Any], None], tuple[str, str] | None, str]] = [
    (llm_auth, ("llm", "auth"), "apology"),
    (llm_outage, ("llm", "unavailable"), "apology"),
    (llm_timeout, ("llm", "timeout"), "apology"),
    (llm_drop, ("llm", "dropped"), "apology"),
    (stt_auth, ("stt", "auth"), "reply"),  # falls back to the offline STT; the call goes on
    (stt_drop, None, "reply"),  # reconnects and re-sends the unfinalized audio: nothing is lost
    (tts_auth, ("tts", "auth"), "reply"),  # the offline voice speaks instead
    (tts_outage, ("tts", "unavailable"), "reply"),
    (tts_timeout, ("tts", "timeout"), "reply"),
    (tts_drop, ("tts", "dropped"), "reply"),
]


@pytest.mark.parametrize(("fault", "error", "expect"), CASES, ids=[c[0].__name__ for c in CASES])
async def test_a_failing_engine_never_leaves_the_caller_in_silence(
    conversation: Conversation, settings: Any, fault: Any, error: tuple[str, str] | None, expect: str
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
    _, turns, events = await db(call_log, call.id)
    caller = [t for t in turns if t.role == "caller"]
    assert caller and caller[0].text  # the caller's words are kept
    if error is None or error[0] != "stt":
        assert caller[0].text == "What time do you open?"
    reply = next(t for t in turns if t.role == "bot" and t.index > caller[0].index)
    if expect == "apology":
        assert reply.text.endswith(django_settings.APOLOGY_LINE)
    else:
        assert reply.text == REPLY_TEXT and not reply.interrupted
    failures = [e for e in events if e.kind == EventKind.ERROR]
    if error is None:
        assert conversation.deepgram.listen_attempts >= 2  # it really did drop and reconnect
    else:
        stage, kind = error
        assert any(e.data.get("stage") == stage and e.data.get("kind") == kind for e in failures), [
            e.data for e in failures
        ]
