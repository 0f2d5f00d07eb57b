"""Whole emulated calls against the real app, in-process: status callbacks, hang-up and transfer
through the carrier, the bot's own transfer and silence handling, barge-in and the recording.

Each call runs in real time on the exchange's loop (``inprocess_exchange``), with the offline
engines and the scripted agent on the bot's side; the callers are scenarios of real speech.
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
from django.utils import timezone
from twilio.request_validator import RequestValidator

from calls import services
from calls.carriers import CarrierError
from calls.carriers.emulator import EMULATOR_ACCOUNT_SID
from calls.emulator.call import CallOrder, EmulatedCall, StreamTwiml
from calls.emulator.exchange import Exchange
from calls.emulator.scenario import load_scenario
from calls.emulator.transport import AsgiTransport
from calls.models import Call, CallStatus, EndReason, EventKind

pytestmark = pytest.mark.django_db(transaction=True)

GREETING = "Hello there, this is a short test call from the clinic about your appointment."
STATUS_PARAMS = {
    "AccountSid",
    "ApiVersion",
    "CallSid",
    "CallStatus",
    "Direction",
    "From",
    "To",
    "Called",
    "Caller",
    "SequenceNumber",
    "Timestamp",
    "CallbackSource",
}


def scenario_dir(tmp_path: Path, settings: Any, **files: str) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.toml").write_text(text)
    settings.EMULATOR_SCENARIO_DIRS = [str(folder)]


def wait_until(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true within {timeout_s} s: {check}")


def streaming(call: Call) -> bool:
    return call.events.filter(kind=EventKind.STREAM_START).exists()


def events(call: Call, kind: str) -> list[Any]:
    return list(call.events.filter(kind=kind).order_by("at", "id"))


def read_stereo(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return frames[:, 0].astype(float), frames[:, 1].astype(float)


def level_dbfs(x: np.ndarray, start_ms: int, end_ms: int) -> float:
    part = x[start_ms * 8 : end_ms * 8]
    return 20 * np.log10(max(1e-9, float(np.sqrt(np.mean(part**2)))) / 32768)


# ---- status callbacks ------------------------------------------------------------------------------


class RecordingAsgiTransport(AsgiTransport):
    """The in-process transport, keeping a copy of every status-callback request it sends."""

    def __init__(self, application: Any) -> None:
        super().__init__(application)
        self.requests: list[httpx.Request] = []

    def http_client(self) -> httpx.AsyncClient:
        client = super().http_client()

        async def keep(request: httpx.Request) -> None:
            await request.aread()
            self.requests.append(request)

        client.event_hooks["request"].append(keep)
        return client


def test_status_callbacks_carry_twilios_parameters_and_a_valid_signature(settings, tmp_path):
    from calls.emulator.exchange import set_exchange
    from voicebot.asgi import application

    settings.TWILIO_AUTH_TOKEN = "emulator-test-token"
    scenario_dir(tmp_path, settings, brief="[[steps]]\nafter_bot_starts_ms = 1600\nhangup = true\n")
    transport = RecordingAsgiTransport(application)
    exchange = Exchange(transport)
    previous = set_exchange(exchange)
    started = timezone.now().replace(microsecond=0)
    try:
        call = services.place_call(to="+15005550100", greeting=GREETING, metadata={"scenario": "brief"})
        outcome = exchange.wait(call.call_sid, 60)
    finally:
        set_exchange(previous)
        exchange.close()

    assert [status for status, _ in outcome.callbacks] == ["initiated", "ringing", "in-progress", "completed"]
    assert [result for _, result in outcome.callbacks] == [204] * 4  # the webhook verified and took each
    validator = RequestValidator("emulator-test-token")
    for n, request in enumerate(transport.requests):
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        url = str(request.url)
        assert url == f"http://testserver/calls/twilio/status?call_id={call.id}"
        params = dict(parse_qsl(request.content.decode()))
        signature = request.headers["x-twilio-signature"]
        assert validator.validate(url, params, signature)
        assert not validator.validate(url, {**params, "CallStatus": "busy"}, signature)
        final = params["CallStatus"] == "completed"
        assert set(params) == STATUS_PARAMS | ({"CallDuration", "Duration"} if final else set())
        assert params["SequenceNumber"] == str(n)
        assert (params["CallSid"], params["AccountSid"]) == (call.call_sid, EMULATOR_ACCOUNT_SID)
        assert (params["ApiVersion"], params["Direction"]) == ("2010-04-01", "outbound-api")
        assert (params["To"], params["Called"]) == ("+15005550100", "+15005550100")
        assert (params["From"], params["Caller"]) == ("+15005550006", "+15005550006")
        assert params["CallbackSource"] == "call-progress-events"
        assert params["Timestamp"].endswith(" +0000")
        assert started <= parsedate_to_datetime(params["Timestamp"]) <= timezone.now()
    final_params = dict(parse_qsl(transport.requests[-1].content.decode()))
    assert final_params["CallDuration"] == str(outcome.duration_s)
    assert final_params["Duration"] == "1"
    call.refresh_from_db()
    # The signed WebSocket handshake was accepted too: the session ran and logged the call.
    assert streaming(call) and call.status == CallStatus.COMPLETED
    assert [e.data["CallStatus"] for e in events(call, EventKind.STATUS)] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]


async def test_a_wrong_auth_token_is_refused_at_the_stream_and_the_webhook(settings):
    from voicebot.asgi import application

    settings.TWILIO_AUTH_TOKEN = "the-servers-token"
    order = CallOrder(
        call_sid="CA" + "1" * 32,
        account_sid=EMULATOR_ACCOUNT_SID,
        to="+15005550100",
        from_="+15005550006",
        stream=StreamTwiml("wss://testserver/media-stream", {}),
        status_callback="http://testserver/calls/twilio/status",
        scenario=load_scenario("stays-silent"),
        auth_token="not-the-token",
        plain_http=True,
        answer_after_ms=10,
    )
    outcome = await EmulatedCall(order, AsgiTransport(application)).run()
    assert outcome.ended_by == "stream-refused" and "4403" in outcome.error
    assert outcome.status == "completed" and outcome.stream_log is None
    assert [result for _, result in outcome.callbacks] == [403] * 4


# ---- the REST API's hang-up and transfer -------------------------------------------------------------


def api_post(exchange: Exchange, token: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """POST to the call API of the in-process app, on the exchange's loop: as in Daphne, the sync view's
    channel-layer messages then run on the loop the live session is on."""
    from voicebot.asgi import application

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post(path, json=body or {}, headers={"Authorization": f"Token {token}"})

    return asyncio.run_coroutine_threadsafe(post(), exchange.loop()).result(30)


@pytest.fixture
def token(django_user_model: Any) -> str:
    from rest_framework.authtoken.models import Token

    return str(Token.objects.create(user=django_user_model.objects.create_user("caller-tests")).key)


#: Twilio applies a call update asynchronously: the stream's stop may come at once (overtaking the
#: REST response) or a little later. The session must get the end reason right either way.
STOP_DELAYS = pytest.mark.parametrize(
    "stop_delay_ms", [0, 250], ids=["stop-overtakes-the-update", "stop-250ms-later"]
)


@STOP_DELAYS
def test_a_hangup_through_the_carrier_stops_the_stream_and_completes_the_call(
    inprocess_exchange, settings, token, stop_delay_ms
):
    settings.EMULATOR_UPDATE_DELAY_MS = stop_delay_ms
    call = services.place_call(to="+15005550104", greeting=GREETING)  # stays-silent, by its number
    wait_until(lambda: streaming(call))
    time.sleep(0.5)
    response = api_post(inprocess_exchange, token, f"/calls/{call.call_sid}/hangup")
    assert response.status_code == 200 and response.json()["already_ended"] is False
    outcome = inprocess_exchange.wait(call.call_sid, 30)
    assert (outcome.status, outcome.ended_by, outcome.dialed) == ("completed", "rest-hangup", "")
    call.refresh_from_db()
    assert call.status == CallStatus.COMPLETED and call.end_reason == EndReason.API_HANGUP
    (stop,) = events(call, EventKind.STREAM_STOP)
    assert stop.data["end_reason"] == EndReason.API_HANGUP
    greeting = call.turns.get(index=0)
    assert greeting.interrupted and GREETING.startswith(greeting.heard_text)
    with pytest.raises(CarrierError) as info:
        inprocess_exchange.hangup(call.call_sid)
    assert info.value.code == "20404" and info.value.call_not_active


@pytest.mark.parametrize("delay_ms", [0, 800])
def test_the_stream_stops_emulator_update_delay_ms_after_the_carrier_accepts_a_hangup(
    inprocess_exchange, settings, delay_ms
):
    settings.EMULATOR_UPDATE_DELAY_MS = delay_ms
    call = services.place_call(to="+15005550104", greeting=GREETING)
    wait_until(lambda: streaming(call))
    (start,) = events(call, EventKind.STREAM_START)
    time.sleep(0.5)
    asked = timezone.now()
    inprocess_exchange.hangup(call.call_sid)  # the carrier alone: nobody tells the session
    outcome = inprocess_exchange.wait(call.call_sid, 30)
    assert (outcome.status, outcome.ended_by) == ("completed", "rest-hangup")
    (stop,) = events(call, EventKind.STREAM_STOP)
    assert stop.data["cause"] == "stop"
    # On the call clock (0 when the stream started): from the accepted request to Twilio's stop.
    asked_ms = (asked - start.at).total_seconds() * 1000
    assert delay_ms - 150 <= stop.audio_ms - asked_ms <= delay_ms + 250


@STOP_DELAYS
def test_a_transfer_through_the_carrier_ends_the_stream_and_records_the_dial_target(
    inprocess_exchange, settings, token, stop_delay_ms
):
    settings.EMULATOR_UPDATE_DELAY_MS = stop_delay_ms
    settings.TRANSFER_ANNOUNCEMENT = "Please hold."
    call = services.place_call(to="+15005550104", greeting=GREETING)
    wait_until(lambda: streaming(call))
    response = api_post(inprocess_exchange, token, f"/calls/{call.call_sid}/transfer", {"to": "+15005550199"})
    assert response.status_code == 200 and response.json()["transfer_to"] == "+15005550199"
    outcome = inprocess_exchange.wait(call.call_sid, 30)
    assert (outcome.ended_by, outcome.dialed) == ("transfer", "+15005550199")
    assert outcome.announcement == ("Please hold.",)
    assert outcome.status == "completed"
    call.refresh_from_db()
    assert call.transfer_to == "+15005550199" and call.end_reason == EndReason.TRANSFERRED
    assert call.status == CallStatus.COMPLETED  # from the emulator's completed callback
    (stop,) = events(call, EventKind.STREAM_STOP)
    assert stop.data["end_reason"] == EndReason.TRANSFERRED


def test_a_call_hung_up_while_ringing_is_canceled_and_cannot_be_transferred(inprocess_exchange, settings):
    settings.EMULATOR_ANSWER_AFTER_MS = 3000
    call = services.place_call(to="+15005550104")
    with pytest.raises(CarrierError) as info:
        inprocess_exchange.redirect(call.call_sid, "<Response><Dial>+15005550199</Dial></Response>")
    assert info.value.code == "21220"
    inprocess_exchange.hangup(call.call_sid)
    outcome = inprocess_exchange.wait(call.call_sid, 10)
    assert outcome.status == "canceled" and outcome.stream_log is None
    assert [status for status, _ in outcome.callbacks] == ["initiated", "ringing", "canceled"]
    call.refresh_from_db()
    assert call.status == CallStatus.CANCELED and call.end_reason == EndReason.NOT_ANSWERED


# ---- the bot's side, driven by scripted callers ------------------------------------------------------


@STOP_DELAYS
def test_the_bot_transfers_a_caller_who_asks_for_a_person(
    inprocess_exchange, settings, stop_delay_ms
):
    settings.EMULATOR_UPDATE_DELAY_MS = stop_delay_ms
    settings.HUMAN_AGENT_NUMBER = "+15005550199"
    call = services.place_call(to="+15005550102", greeting="Hi, this is the clinic.")  # asks-for-person
    outcome = inprocess_exchange.wait(call.call_sid, 60)
    assert (outcome.ended_by, outcome.dialed, outcome.announcement) == ("transfer", "+15005550199", ())
    call.refresh_from_db()
    assert call.transfer_to == "+15005550199" and call.end_reason == EndReason.TRANSFERRED
    assert call.status == CallStatus.COMPLETED
    (press,) = events(call, EventKind.DTMF)
    assert press.data["digit"] == "0"
    handoff = call.turns.filter(role="bot").order_by("index").last()
    assert handoff.text == "One moment please, I'm connecting you with a person."
    assert not handoff.interrupted and handoff.heard_text == handoff.text  # played in full before <Dial>


def test_a_silent_callee_is_reprompted_then_hung_up_on(inprocess_exchange, settings):
    settings.SILENCE_TIMEOUT_S = 1.0
    settings.REPROMPT_LINE = "Are you there?"
    settings.SILENCE_GOODBYE_LINE = "Goodbye."
    call = services.place_call(to="+15005550100", greeting="Hi.", metadata={"scenario": "stays-silent"})
    outcome = inprocess_exchange.wait(call.call_sid, 60)
    assert outcome.ended_by == "rest-hangup"  # the bot's end_call hangs up through the carrier
    assert outcome.scenario is not None and outcome.scenario.steps_done == 0
    call.refresh_from_db()
    assert call.end_reason == EndReason.SILENCE and call.status == CallStatus.COMPLETED
    actions = [e.data["action"] for e in events(call, EventKind.SILENCE)]
    assert actions == ["reprompt", "reprompt", "end"]
    said = [t.text for t in call.turns.order_by("index")]
    assert said == ["Hi.", "Are you there?", "Are you there?", "Goodbye."]
    assert outcome.stream_log is not None and outcome.stream_log.clears == []


def test_a_caller_barging_into_the_greeting_cuts_it_and_is_recorded_on_the_left(inprocess_exchange, settings):
    call = services.place_call(to="+15005550101")  # interrupts-greeting: 1 s in, then hangs up
    outcome = inprocess_exchange.wait(call.call_sid, 60)
    assert outcome.scenario is not None and outcome.scenario.hung_up and outcome.ended_by == "caller"
    call.refresh_from_db()
    assert call.status == CallStatus.COMPLETED and call.end_reason == EndReason.CALLER_HANGUP

    (barge_in, *_) = events(call, EventKind.BARGE_IN)
    assert barge_in.data["cause"] == "speech" and barge_in.data["detection_latency_ms"] <= 100
    greeting = call.turns.get(index=0)
    heard, said = greeting.heard_text.split(), greeting.text.split()
    assert greeting.interrupted and 0 < len(heard) < len(said) and said[: len(heard)] == heard
    log = outcome.stream_log
    assert log is not None and log.clears and abs(log.clears[0] - barge_in.audio_ms) <= 40

    # Marks against the real consumer: each greeting mark is echoed when the audio sent before it
    # has played (the greeting arrives faster than real time, so from the first media on, mark k
    # comes back after the audio queued ahead of it), and the clear echoes every pending mark at once.
    first_media = next(m.at_ms for m in log.bot_messages if m.kind == "media")
    queued_ms, due = 0, {}
    for message in log.bot_messages:
        if message.at_ms > log.clears[0]:
            break
        if message.kind == "media":
            queued_ms += message.size // 8
        elif message.kind == "mark":
            due[message.name] = first_media + queued_ms
    played = [(at, name) for at, name, was_played in log.mark_echoes if was_played and name in due]
    cleared = [(at, name) for at, name, was_played in log.mark_echoes if not was_played]
    assert played and all(0 <= at - due[name] <= 20 for at, name in played)  # one 20 ms tick
    assert {at for at, _ in cleared} == {log.clears[0]}
    assert len(cleared) == barge_in.data["cleared_marks"] > 0
    assert {name for _, name in played}.isdisjoint(name for _, name in cleared)

    # The recording: the caller (left) speaks from the barge-in on; the bot (right) is heard until
    # the clear and silent after it, until its answer starts.
    path = Path(settings.MEDIA_ROOT) / "recordings" / f"{call.call_sid}.wav"
    assert call.recording.name == f"recordings/{call.call_sid}.wav" and path.is_file()
    left, right = read_stereo(path)
    step1_ms = outcome.scenario.log[0][0]
    bot_start_ms = int(np.argmax(np.abs(right) > 0)) // 8
    # after_bot_starts_ms = 1000 on the 20 ms clock (the TTS audio may open with a few zero samples)
    assert 960 <= step1_ms - bot_start_ms <= 1040
    onset = barge_in.data["onset_ms"]
    answer = call.turns.filter(role="bot", index__gt=0).order_by("index").first()
    quiet_until = answer.first_audio_ms if answer and answer.first_audio_ms else onset + 3000
    assert level_dbfs(right, bot_start_ms + 100, onset - 60) > -35  # greeting playing
    assert level_dbfs(left, 0, step1_ms - 20) < -80  # the caller is silent meanwhile
    assert level_dbfs(left, onset, onset + 2000) > -35  # caller speech
    assert level_dbfs(right, log.clears[0] + 20, quiet_until - 20) < -80  # clear dropped the rest
    (stop,) = events(call, EventKind.STREAM_STOP)
    assert len(left) == len(right) and abs(len(left) // 8 - stop.audio_ms) < 500  # the whole call


def test_a_late_transcript_does_not_cut_the_goodbye_of_a_keypress_that_came_after_it(
    inprocess_exchange, settings, tmp_path
):
    """The caller speaks, then presses # at once. The offline transcript of the speech arrives while
    the goodbye plays; it is kept in the transcript, but it must not barge in on that goodbye."""
    scenario_dir(
        tmp_path,
        settings,
        speak_then_pound=(
            '[[steps]]\nafter_bot_stops_ms = 300\nsay = "clone_test"\nfrom_ms = 400\n\n'
            '[[steps]]\ndtmf = "#"\n'
        ),
    )
    # A goodbye long enough that the speech's transcript (~2 s of offline decoding) lands inside it.
    settings.GOODBYE_LINE = (
        "Thank you very much for calling us today, it was a real pleasure, have a lovely day, goodbye!"
    )
    call = services.place_call(to="+15005550100", greeting="Hi.", metadata={"scenario": "speak_then_pound"})
    outcome = inprocess_exchange.wait(call.call_sid, 40)
    assert outcome.ended_by == "rest-hangup"
    call.refresh_from_db()
    assert call.end_reason == EndReason.BOT_HANGUP
    assert events(call, EventKind.BARGE_IN) == []
    turns = list(call.turns.order_by("index"))
    # In the order things were said: the greeting, the caller's words, the keypress, the goodbye.
    assert [t.role for t in turns] == ["bot", "caller", "caller", "bot"]
    assert turns[2].text == "[The caller pressed # on the keypad]"
    assert turns[3].text == settings.GOODBYE_LINE and not turns[3].interrupted


# ---- scenario features, run against the real app ------------------------------------------------------


def logged_at(outcome: Any, text: str) -> int:
    """The call-clock ms of the scenario log line containing ``text``."""
    assert outcome.scenario is not None
    (at,) = [ms for ms, line in outcome.scenario.log if text in line]
    return at


def test_an_at_ms_trigger_and_a_silence_step_keep_their_times(inprocess_exchange, settings, tmp_path):
    scenario_dir(
        tmp_path,
        settings,
        timed="[[steps]]\nat_ms = 1500\nsilence_ms = 700\n\n[[steps]]\nhangup = true\n",
    )
    call = services.place_call(to="+15005550100", greeting=GREETING, metadata={"scenario": "timed"})
    outcome = inprocess_exchange.wait(call.call_sid, 30)
    assert outcome.scenario is not None
    assert (outcome.scenario.steps_done, outcome.scenario.hung_up, outcome.scenario.error) == (2, True, "")
    assert outcome.ended_by == "caller"
    silence = logged_at(outcome, "step 1: at 1500 ms, stay silent 700 ms")
    hangup = logged_at(outcome, "step 2: next, hang up")
    assert abs(silence - 1500) <= 40
    assert abs(hangup - (silence + 700)) <= 40
    call.refresh_from_db()
    assert call.end_reason == EndReason.CALLER_HANGUP and call.status == CallStatus.COMPLETED
    (stop,) = events(call, EventKind.STREAM_STOP)
    assert abs(stop.audio_ms - hangup) <= 100  # the caller's stop ended the stream there


def test_a_step_whose_trigger_does_not_come_in_time_gives_up_and_hangs_up(
    inprocess_exchange, settings, tmp_path
):
    scenario_dir(
        tmp_path,
        settings,
        impatient=(
            "[[steps]]\nat_ms = 1000\nsilence_ms = 100\n\n"
            "[[steps]]\nnote = 'waits for the end of the greeting'\nafter_bot_stops_ms = 100\n"
            "timeout_ms = 800\nsay = \"clone_test\"\n\n"
            "[[steps]]\ndtmf = \"#\"\n"
        ),
    )
    call = services.place_call(to="+15005550100", greeting=GREETING, metadata={"scenario": "impatient"})
    outcome = inprocess_exchange.wait(call.call_sid, 30)
    result = outcome.scenario
    assert result is not None and result.hung_up and result.steps_done == 1
    assert result.error.startswith("step 2: 100 ms after the bot stops, say clone_test")
    assert result.error.endswith("its trigger did not come within 800 ms")
    waited_from = logged_at(outcome, "step 1: at 1000 ms") + 100
    gave_up = logged_at(outcome, "giving up")
    assert abs(gave_up - (waited_from + 800)) <= 40
    assert outcome.ended_by == "caller"
    call.refresh_from_db()
    assert call.end_reason == EndReason.CALLER_HANGUP
    assert events(call, EventKind.DTMF) == []  # the steps after the timeout never ran
    greeting = call.turns.get(index=0)
    assert greeting.text == GREETING and greeting.heard_text != GREETING  # hung up on mid-greeting


def test_the_says_goodbye_caller_is_sent_off_by_the_bot(inprocess_exchange, settings):
    settings.DEFAULT_GREETING = "Hi, this is the clinic calling."
    call = services.place_call(to="+15005550103")  # says-goodbye, by its number
    outcome = inprocess_exchange.wait(call.call_sid, 60)
    result, log = outcome.scenario, outcome.stream_log
    assert result is not None and log is not None
    assert (result.steps_done, result.hung_up, result.error) == (2, False, "")
    assert outcome.ended_by == "rest-hangup"  # the bot's end_call

    # Step 1 speaks 600 ms after the greeting has played out (the playout clock: each media message
    # plays after the audio queued before it, from when it arrived).
    spoke = logged_at(outcome, "step 1: 600 ms after the bot stops, say beckett [7900-9200 ms]")
    greeting_end = 0
    for message in log.bot_messages:
        if message.at_ms >= spoke:
            break
        if message.kind == "media":
            greeting_end = max(greeting_end, message.at_ms) + message.size // 8
    assert abs(spoke - (greeting_end + 600)) <= 40
    # Step 2 presses # 800 ms into the bot's reply.
    pressed = logged_at(outcome, "step 2: 800 ms into the bot's speech, press #")
    reply_start = next(m.at_ms for m in log.bot_messages if m.kind == "media" and m.at_ms > spoke)
    assert abs(pressed - (reply_start + 800)) <= 40

    call.refresh_from_db()
    assert call.status == CallStatus.COMPLETED and call.end_reason == EndReason.BOT_HANGUP
    turns = list(call.turns.order_by("index"))
    assert not turns[0].interrupted and turns[0].heard_text == turns[0].text  # heard in full
    assert [t.role for t in turns[:2]] == ["bot", "caller"]
    assert turns[-1].text == settings.GOODBYE_LINE and not turns[-1].interrupted
    assert [e.data["digit"] for e in events(call, EventKind.DTMF)] == ["#"]
    assert [e.data["cause"] for e in events(call, EventKind.BARGE_IN)] == ["dtmf"]
    assert call.recording.name == f"recordings/{call.call_sid}.wav"
