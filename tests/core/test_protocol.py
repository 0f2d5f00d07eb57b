"""The Twilio Media Streams codec: round trips, Twilio's documented shapes, bad input, order rules."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from media_ws.errors import (
    MalformedMessage,
    OutOfOrderMessage,
    ProtocolError,
    StreamMismatch,
    UnknownEvent,
)
from media_ws.protocol import (
    Connected,
    Dtmf,
    Mark,
    Media,
    MediaStreamParser,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    Start,
    Stop,
    TwilioStreamWriter,
    build_clear,
    build_mark,
    build_media,
    parse_inbound,
    parse_outbound,
)

STREAM = "MZ" + "1" * 32
CALL = "CA" + "2" * 32
ACCOUNT = "AC" + "3" * 32
FRAME = bytes(range(96, 256))  # 160 bytes = 20 ms of μ-law, every byte distinct from its neighbour


def writer() -> TwilioStreamWriter:
    return TwilioStreamWriter(STREAM, CALL, ACCOUNT)


def started_parser() -> tuple[MediaStreamParser, TwilioStreamWriter]:
    w = writer()
    p = MediaStreamParser()
    p.receive(w.connected())
    p.receive(w.start({"call_id": "7"}))
    return p, w


# --- Twilio side -> parse_inbound round trips --------------------------------------------------


def test_writer_messages_parse_back_into_the_right_events_with_numbers_converted():
    w = writer()
    assert parse_inbound(w.connected()) == Connected(protocol="Call", version="1.0.0")
    start = parse_inbound(w.start({"call_id": "42", "FirstName": "Jane"}))
    assert start == Start(
        stream_sid=STREAM,
        call_sid=CALL,
        account_sid=ACCOUNT,
        tracks=("inbound",),
        custom_parameters={"call_id": "42", "FirstName": "Jane"},
        encoding="audio/x-mulaw",
        sample_rate=8000,
        channels=1,
        sequence_number=1,
    )
    first = parse_inbound(w.media(FRAME, 0))
    second = parse_inbound(w.media(FRAME[::-1], 20))
    assert first == Media(STREAM, "inbound", 1, 0, FRAME, 2)
    assert second == Media(STREAM, "inbound", 2, 20, FRAME[::-1], 3)
    assert parse_inbound(w.mark("3.17")) == Mark(STREAM, "3.17", 4)
    assert parse_inbound(w.dtmf("#")) == Dtmf(STREAM, "#", "inbound_track", 5)
    assert parse_inbound(w.media(FRAME, 40)).chunk == 3  # chunk counts media messages only
    assert parse_inbound(w.stop()) == Stop(STREAM, CALL, ACCOUNT, 7)


def test_writer_uses_twilio_wire_types_strings_for_numbers_ints_for_media_format():
    w = writer()
    connected = json.loads(w.connected())
    assert "sequenceNumber" not in connected and "streamSid" not in connected
    start = json.loads(w.start({"a": "b"}, tracks=("inbound", "outbound")))
    assert start["sequenceNumber"] == "1"
    assert start["streamSid"] == start["start"]["streamSid"] == STREAM
    assert start["start"]["tracks"] == ["inbound", "outbound"]
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    media = json.loads(w.media(FRAME, 1234))
    assert media == {
        "event": "media",
        "sequenceNumber": "2",
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "1234",
            "payload": base64.b64encode(FRAME).decode(),
        },
        "streamSid": STREAM,
    }
    assert json.loads(w.dtmf("5"))["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert json.loads(w.stop())["stop"] == {"accountSid": ACCOUNT, "callSid": CALL}


def test_writer_refuses_a_negative_timestamp():
    with pytest.raises(ValueError, match="timestamp_ms"):
        writer().media(FRAME, -20)


def test_parse_inbound_accepts_utf8_bytes_and_non_ascii_custom_parameters():
    text = writer().start({"name": "Zoë Ñúñez", "note": "¿sí?"})
    assert parse_inbound(text.encode()).custom_parameters == {"name": "Zoë Ñúñez", "note": "¿sí?"}


# --- Twilio's documented examples (reference A1/A2) --------------------------------------------

DOC_INBOUND = [
    ('{"event":"connected","protocol":"Call","version":"1.0.0"}', Connected("Call", "1.0.0")),
    (
        '{"event":"start","sequenceNumber":"1",'
        ' "start":{"accountSid":"ACxx","streamSid":"MZxx","callSid":"CAxx","tracks":["inbound"],'
        ' "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},'
        ' "customParameters":{"FirstName":"Jane","LastName":"Doe"}},'
        ' "streamSid":"MZxx"}',
        Start(
            "MZxx",
            "CAxx",
            "ACxx",
            ("inbound",),
            {"FirstName": "Jane", "LastName": "Doe"},
            "audio/x-mulaw",
            8000,
            1,
            1,
        ),
    ),
    (
        '{"event":"media","sequenceNumber":"4","media":{"track":"inbound","chunk":"2","timestamp":"5",'
        '"payload":"no+JhoaJjpzS"},"streamSid":"MZxx"}',
        Media("MZxx", "inbound", 2, 5, base64.b64decode("no+JhoaJjpzS"), 4),
    ),
    (
        '{"event":"dtmf","streamSid":"MZxx","sequenceNumber":"5","dtmf":{"track":"inbound_track","digit":"1"}}',
        Dtmf("MZxx", "1", "inbound_track", 5),
    ),
    (
        '{"event":"mark","sequenceNumber":"4","streamSid":"MZxx","mark":{"name":"my label"}}',
        Mark("MZxx", "my label", 4),
    ),
    (
        '{"event":"stop","sequenceNumber":"5","stop":{"accountSid":"ACxx","callSid":"CAxx"},"streamSid":"MZxx"}',
        Stop("MZxx", "CAxx", "ACxx", 5),
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), DOC_INBOUND, ids=["connected", "start", "media", "dtmf", "mark", "stop"]
)
def test_twilio_documented_inbound_examples_parse(text, expected):
    assert parse_inbound(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"event":"media","streamSid":"MZxx","media":{"payload":"/38A"}}',
            OutboundMedia("MZxx", b"\xff\x7f\x00"),
        ),
        ('{"event":"mark","streamSid":"MZxx","mark":{"name":"utt-42"}}', OutboundMark("MZxx", "utt-42")),
        ('{"event":"clear","streamSid":"MZxx"}', OutboundClear("MZxx")),
    ],
    ids=["media", "mark", "clear"],
)
def test_twilio_documented_outbound_examples_parse(text, expected):
    assert parse_outbound(text) == expected


# --- Our side: build_* -------------------------------------------------------------------------


def test_build_functions_produce_exactly_twilios_shapes_and_parse_back():
    media = build_media(STREAM, FRAME)
    assert json.loads(media) == {
        "event": "media",
        "streamSid": STREAM,
        "media": {"payload": base64.b64encode(FRAME).decode()},
    }
    assert parse_outbound(media) == OutboundMedia(STREAM, FRAME)
    mark = build_mark(STREAM, "4.12")
    assert json.loads(mark) == {"event": "mark", "streamSid": STREAM, "mark": {"name": "4.12"}}
    assert parse_outbound(mark) == OutboundMark(STREAM, "4.12")
    clear = build_clear(STREAM)
    assert json.loads(clear) == {"event": "clear", "streamSid": STREAM}
    assert parse_outbound(clear) == OutboundClear(STREAM)


def test_build_escapes_stream_sid_and_mark_name_as_json():
    odd = 'MZ"quoted"\\'
    assert parse_outbound(build_media(odd, b"\x01")) == OutboundMedia(odd, b"\x01")
    assert parse_outbound(build_mark(odd, 'na"me')) == OutboundMark(odd, 'na"me')


@pytest.mark.parametrize(
    "build",
    [lambda s: build_media(s, FRAME), lambda s: build_mark(s, "m"), build_clear],
    ids=["media", "mark", "clear"],
)
def test_nothing_can_be_built_without_a_stream_sid(build):
    with pytest.raises(ValueError, match="stream_sid"):
        build("")


def test_parse_outbound_rejects_twilio_only_events_and_bad_fields():
    with pytest.raises(UnknownEvent, match="'start'"):
        parse_outbound(writer().start({}))
    with pytest.raises(MalformedMessage, match="streamSid") as info:
        parse_outbound('{"event":"clear"}')
    assert info.value.reason == "missing_field"
    with pytest.raises(MalformedMessage, match=r"media\.payload") as info:
        parse_outbound('{"event":"media","streamSid":"MZ","media":{"payload":"%%%%"}}')
    assert info.value.reason == "bad_payload"
    with pytest.raises(MalformedMessage, match=r"mark\.name"):
        parse_outbound('{"event":"mark","streamSid":"MZ","mark":{"name":7}}')


# --- Bad input ---------------------------------------------------------------------------------


def media_msg(**changes: object) -> str:
    """A valid Twilio media message with fields of ``media`` replaced (None deletes)."""
    msg = json.loads(writer().media(FRAME, 20))
    for key, value in changes.items():
        if value is None:
            del msg["media"][key]
        else:
            msg["media"][key] = value
    return json.dumps(msg)


def start_msg(**changes: object) -> str:
    msg = json.loads(writer().start({"call_id": "1"}))
    for key, value in changes.items():
        if value is None:
            del msg["start"][key]
        else:
            msg["start"][key] = value
    return json.dumps(msg)


MALFORMED = [
    # (id, text, exception, reason, fragment of the message)
    ("truncated json", '{"event":"media","media":{', MalformedMessage, "bad_json", "not valid JSON"),
    ("empty frame", "", MalformedMessage, "bad_json", "not valid JSON"),
    ("invalid utf8 bytes", b'{"event":"\xff"}', MalformedMessage, "bad_json", "not valid JSON"),
    ("json array", '[{"event":"media"}]', MalformedMessage, "not_object", "JSON object, got a JSON list"),
    ("json string", '"media"', MalformedMessage, "not_object", "got a JSON str"),
    ("no event", '{"streamSid":"MZ"}', MalformedMessage, "missing_event", "no 'event'"),
    ("event not a string", '{"event":5}', MalformedMessage, "bad_field", "'event' must be a string, got 5"),
    ("unknown event", '{"event":"hello","streamSid":"MZ"}', UnknownEvent, "unknown_event", "'hello'"),
    ("our own clear", '{"event":"clear","streamSid":"MZ"}', UnknownEvent, "unknown_event", "'clear'"),
    (
        "media object missing",
        '{"event":"media","streamSid":"MZ"}',
        MalformedMessage,
        "missing_field",
        "media message: field 'media' is missing",
    ),
    (
        "media not an object",
        '{"event":"media","streamSid":"MZ","media":"x"}',
        MalformedMessage,
        "bad_field",
        "'media' must be an object",
    ),
    (
        "non-numeric timestamp",
        media_msg(timestamp="12ms"),
        MalformedMessage,
        "bad_field",
        "'media.timestamp' must be a decimal string, got '12ms'",
    ),
    ("negative timestamp", media_msg(timestamp="-20"), MalformedMessage, "bad_field", "media.timestamp"),
    ("float chunk", media_msg(chunk=1.5), MalformedMessage, "bad_field", "'media.chunk' must be"),
    ("bool chunk", media_msg(chunk=True), MalformedMessage, "bad_field", "got True"),
    ("unicode digits", media_msg(chunk="١٢"), MalformedMessage, "bad_field", "media.chunk"),
    ("absurdly long number", media_msg(timestamp="9" * 5000), MalformedMessage, "bad_field", "…"),
    ("missing chunk", media_msg(chunk=None), MalformedMessage, "missing_field", "'media.chunk' is missing"),
    ("missing payload", media_msg(payload=None), MalformedMessage, "missing_field", "media.payload"),
    (
        "track not a string",
        media_msg(track=["inbound"]),
        MalformedMessage,
        "bad_field",
        "'media.track' must be a non-empty string, got list",
    ),
    ("payload bad padding", media_msg(payload="AAA"), MalformedMessage, "bad_payload", "not valid base64"),
    ("payload non-alphabet", media_msg(payload="AA!A"), MalformedMessage, "bad_payload", "not valid base64"),
    ("payload non-ascii", media_msg(payload="ÄÄÄÄ"), MalformedMessage, "bad_payload", "not valid base64"),
    (
        "media without streamSid",
        json.dumps({k: v for k, v in json.loads(media_msg()).items() if k != "streamSid"}),
        MalformedMessage,
        "missing_field",
        "'streamSid' is missing",
    ),
    (
        "bad sequenceNumber",
        json.dumps({**json.loads(media_msg()), "sequenceNumber": "x"}),
        MalformedMessage,
        "bad_field",
        "sequenceNumber",
    ),
    ("start without callSid", start_msg(callSid=None), MalformedMessage, "missing_field", "start.callSid"),
    ("start tracks not a list", start_msg(tracks="inbound"), MalformedMessage, "bad_field", "start.tracks"),
    (
        "start parameter not a string",
        start_msg(customParameters={"call_id": 42}),
        MalformedMessage,
        "bad_field",
        "start.customParameters.call_id",
    ),
    (
        "start without mediaFormat",
        start_msg(mediaFormat=None),
        MalformedMessage,
        "missing_field",
        "start.mediaFormat",
    ),
    (
        "start sampleRate not a number",
        start_msg(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": "8k", "channels": 1}),
        MalformedMessage,
        "bad_field",
        "start.mediaFormat.sampleRate",
    ),
    ("start streamSids disagree", start_msg(streamSid="MZother"), MalformedMessage, "bad_field", "differs"),
    (
        "connected without version",
        '{"event":"connected","protocol":"Call"}',
        MalformedMessage,
        "missing_field",
        "'version'",
    ),
    (
        "mark without name",
        '{"event":"mark","streamSid":"MZ","sequenceNumber":"3","mark":{}}',
        MalformedMessage,
        "missing_field",
        "mark.name",
    ),
    (
        "dtmf without digit",
        '{"event":"dtmf","streamSid":"MZ","dtmf":{"track":"inbound_track"}}',
        MalformedMessage,
        "missing_field",
        "dtmf.digit",
    ),
    ("json nested too deeply", "[" * 100000, MalformedMessage, "bad_json", "nested too deeply"),
    (
        "json nested too deeply inside media",
        '{"event":"media","streamSid":"MZ","media":{"payload":' + "[" * 100000 + "}}",
        MalformedMessage,
        "bad_json",
        "nested too deeply",
    ),
    ("timestamp above 2**31-1", media_msg(timestamp="99999999999"), MalformedMessage, "bad_field", "at most"),
    ("timestamp 2**31", media_msg(timestamp=str(2**31)), MalformedMessage, "bad_field", "at most"),
    ("chunk number 2**31", media_msg(chunk=2**31), MalformedMessage, "bad_field", "'media.chunk' must be at"),
    (
        "sequenceNumber above 2**31-1",
        json.dumps({**json.loads(media_msg()), "sequenceNumber": "4294967296"}),
        MalformedMessage,
        "bad_field",
        "'sequenceNumber' must be at most",
    ),
    ("start callSid with a space", start_msg(callSid="CA 1"), MalformedMessage, "bad_field", "start.callSid"),
    ("start callSid not ascii", start_msg(callSid="CAé1"), MalformedMessage, "bad_field", "start.callSid"),
    ("callSid of 65 chars", start_msg(callSid="C" * 65), MalformedMessage, "bad_field", "SID of 1 to 64"),
    ("start callSid with a dot", start_msg(callSid="CA.1"), MalformedMessage, "bad_field", "start.callSid"),
    ("start callSid empty", start_msg(callSid=""), MalformedMessage, "bad_field", "start.callSid"),
    (
        "start streamSid not a SID",
        json.dumps({**json.loads(start_msg(streamSid=None)), "streamSid": "MZ/../x"}),
        MalformedMessage,
        "bad_field",
        "start.streamSid",
    ),
    ("bad start accountSid", start_msg(accountSid="AC\n1"), MalformedMessage, "bad_field", "accountSid"),
    (
        "stop without callSid",
        '{"event":"stop","streamSid":"MZ","stop":{"accountSid":"AC"}}',
        MalformedMessage,
        "missing_field",
        "stop.callSid",
    ),
]


@pytest.mark.parametrize(
    ("text", "exc", "reason", "fragment"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_input_raises_the_right_protocol_error_with_a_clear_message(text, exc, reason, fragment):
    with pytest.raises(exc) as info:
        parse_inbound(text)
    assert isinstance(info.value, ProtocolError)
    assert info.value.reason == reason
    assert fragment in str(info.value)


def test_error_text_and_traceback_never_contain_the_audio_payload():
    payload = base64.b64encode(FRAME * 10).decode()
    cases = [
        media_msg(payload=payload + "!"),  # bad base64
        media_msg(payload=payload, timestamp="soon"),  # bad field next to a good payload
        media_msg(payload=payload)[:-3],  # broken JSON around a payload
        json.dumps({"event": payload}),  # payload-sized garbage as the event name
    ]
    for text in cases:
        with pytest.raises(ProtocolError) as info:
            parse_inbound(text)
        rendered = "".join(traceback.format_exception(info.value))
        assert payload[:40] not in rendered, rendered[-300:]
        assert len(str(info.value)) < 200


def test_parse_is_liberal_where_nothing_is_lost():
    msg = json.loads(media_msg(chunk=7, timestamp=140))  # JSON numbers instead of strings
    del msg["sequenceNumber"]
    msg["media"]["extra"] = {"future": True}
    msg["newTopLevelField"] = 1
    media = parse_inbound(json.dumps(msg))
    assert (media.chunk, media.timestamp_ms, media.sequence_number, media.payload) == (7, 140, None, FRAME)
    start = parse_inbound(start_msg(customParameters=None))
    assert start.custom_parameters == {}
    only_top_level = json.loads(start_msg(streamSid=None))
    assert parse_inbound(json.dumps(only_top_level)).stream_sid == STREAM


def test_numbers_up_to_2_31_minus_1_and_short_sids_are_accepted():
    media = parse_inbound(media_msg(timestamp=str(2**31 - 1), chunk=2**31 - 1))
    assert (media.timestamp_ms, media.chunk) == (2**31 - 1, 2**31 - 1)
    # Twilio's SIDs are 34 characters; tests and the emulator also use short ones such as "CAxx".
    for sid in ("C", "CAxx", "CA" + "f" * 62):
        assert parse_inbound(start_msg(callSid=sid)).call_sid == sid


def test_deeply_nested_json_is_a_counted_rejection_and_the_stream_goes_on():
    p, w = started_parser()
    nested_media = f'{{"event":"media","streamSid":"{STREAM}","media":{"[" * 100000}}}'
    for text in ("[" * 100000, '{"a":' * 100000, nested_media):
        with pytest.raises(MalformedMessage, match="nested too deeply"):
            p.receive(text)
    assert p.errors == {"bad_json": 3}
    assert p.receive(w.media(FRAME, 20)).payload == FRAME


# --- MediaStreamParser order rules ---------------------------------------------------------------


@pytest.mark.parametrize("message", ["media", "mark", "dtmf", "stop"])
def test_stream_messages_before_start_are_out_of_order(message):
    w = writer()
    p = MediaStreamParser()
    p.receive(w.connected())
    text = {
        "media": lambda: w.media(FRAME, 0),
        "mark": lambda: w.mark("1.1"),
        "dtmf": lambda: w.dtmf("1"),
        "stop": w.stop,
    }[message]()
    with pytest.raises(OutOfOrderMessage, match=f"{message} message before start"):
        p.receive(text)
    assert p.errors == {"out_of_order": 1}
    assert (p.started, p.stream_sid, p.call_sid) == (False, None, None)


def test_start_sets_the_stream_identity():
    p = MediaStreamParser()
    assert (p.stream_sid, p.call_sid, p.started, p.stopped) == (None, None, False, False)
    event = p.receive(writer().start({"call_id": "9"}))  # no `connected` first: accepted
    assert (p.stream_sid, p.call_sid, p.started, p.stopped) == (STREAM, CALL, True, False)
    assert p.start_event is event
    assert p.receive(writer().media(FRAME, 0)).payload == FRAME


def test_a_second_start_is_out_of_order_and_keeps_the_first_identity():
    p, _ = started_parser()
    other = TwilioStreamWriter("MZ" + "9" * 32, "CA" + "9" * 32, ACCOUNT)
    with pytest.raises(OutOfOrderMessage, match="second start"):
        p.receive(other.start({}))
    assert (p.stream_sid, p.call_sid) == (STREAM, CALL)


def test_connected_is_tolerated_twice_before_start_but_not_after():
    w = writer()
    p = MediaStreamParser()
    assert isinstance(p.receive(w.connected()), Connected)
    assert isinstance(p.receive(w.connected()), Connected)
    p.receive(w.start({}))
    with pytest.raises(OutOfOrderMessage, match="connected message after start"):
        p.receive(w.connected())


def test_everything_after_stop_is_out_of_order():
    p, w = started_parser()
    assert isinstance(p.receive(w.stop()), Stop)
    assert p.stopped
    for text in (w.media(FRAME, 20), w.mark("1.1"), w.dtmf("2"), w.stop(), w.connected(), w.start({})):
        with pytest.raises(OutOfOrderMessage, match="after stop"):
            p.receive(text)
    assert p.errors == {"out_of_order": 6}


def test_messages_for_another_stream_are_rejected():
    p, _ = started_parser()
    other = TwilioStreamWriter("MZ" + "8" * 32, CALL, ACCOUNT)
    for text in (other.media(FRAME, 0), other.mark("1.1"), other.dtmf("3"), other.stop()):
        with pytest.raises(StreamMismatch, match="MZ8888"):
            p.receive(text)
    wrong_call = TwilioStreamWriter(STREAM, "CA" + "8" * 32, ACCOUNT)
    with pytest.raises(StreamMismatch, match="callSid"):
        p.receive(wrong_call.stop())
    assert not p.stopped
    assert p.errors == {"stream_mismatch": 5}


def test_rejected_messages_are_counted_by_reason_and_leave_the_stream_usable():
    p, w = started_parser()
    bad = ['{"event":', '{"event":"nope"}', media_msg(timestamp="x"), media_msg(payload="A")]
    for text in bad:
        with pytest.raises(ProtocolError):
            p.receive(text)
    assert p.errors == {"bad_json": 1, "unknown_event": 1, "bad_field": 1, "bad_payload": 1}
    assert p.receive(w.media(FRAME, 20)).payload == FRAME
    assert isinstance(p.receive(w.stop()), Stop)


# --- Layering ----------------------------------------------------------------------------------


def test_core_modules_import_nothing_from_django_or_calls():
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, media_ws.protocol, media_ws.playback\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'calls', 'channels'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
