"""The call timeline on the admin call page: turns, cuts, latencies and events on the call clock."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from calls.models import CallEvent, EventKind, Turn, TurnRole
from calls.timeline import timeline_svg
from tests.calls.conftest import make_call

pytestmark = pytest.mark.django_db


@pytest.fixture
def timed_call():
    call = make_call(duration_s=12)
    now = timezone.now()
    Turn.objects.create(
        call=call,
        index=0,
        role=TurnRole.BOT,
        text="Hello there, how can I help you today?",
        heard_text="Hello there,",
        interrupted=True,
        audio_start_ms=40,
        audio_end_ms=1700,
    )
    Turn.objects.create(
        call=call,
        index=1,
        role=TurnRole.CALLER,
        text="When do you <script>open</script>?",
        audio_start_ms=1620,
        audio_end_ms=3900,
    )
    Turn.objects.create(
        call=call,
        index=2,
        role=TurnRole.BOT,
        text="We open at nine.",
        heard_text="We open at nine.",
        audio_start_ms=4700,
        audio_end_ms=6300,
        speech_end_ms=3900,
        first_audio_ms=4700,
        voice_to_voice_ms=800,
    )
    CallEvent.objects.create(
        call=call,
        kind=EventKind.BARGE_IN,
        at=now,
        audio_ms=1680,
        data={"detection_latency_ms": 60, "cause": "speech"},
    )
    CallEvent.objects.create(
        call=call, kind=EventKind.DTMF, at=now + timedelta(seconds=7), audio_ms=7000, data={"digit": "#"}
    )
    CallEvent.objects.create(
        call=call,
        kind=EventKind.ERROR,
        at=now + timedelta(seconds=8),
        audio_ms=8000,
        data={"stage": "tts", "kind": "timeout"},
    )
    return call


def svg_of(call) -> str:
    return timeline_svg(call.turns.order_by("index"), call.events.order_by("at"))


def test_turns_become_bars_in_their_lanes_with_the_unsaid_rest_hatched(timed_call):
    svg = svg_of(timed_call)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert len(re.findall(r'class="turn caller"', svg)) == 1
    assert len(re.findall(r'class="turn bot( interrupted)?"', svg)) == 2
    assert svg.count('class="unheard"') == 1  # only the interrupted greeting
    bars = re.findall(r'class="(unheard|turn bot interrupted)" x="([\d.]+)" y="\d+" width="([\d.]+)"', svg)
    found = {cls: (float(left), float(width)) for cls, left, width in bars}
    (heard_x, heard_w), (unsaid_x, unsaid_w) = found["turn bot interrupted"], found["unheard"]
    # Solid: the 1.66 s it played (all heard); then, at the cut, the stub with the unsaid words.
    assert heard_w == pytest.approx((1700 - 40) * (960 - 60 - 20) / 8000, abs=0.2)
    assert unsaid_x == pytest.approx(heard_x + heard_w, abs=0.2) and unsaid_w == 10
    assert "not said: how can I help you today?" in svg


def test_barge_ins_keypresses_errors_and_voice_to_voice_are_marked(timed_call):
    svg = svg_of(timed_call)
    assert "barge-in 60 ms" in svg
    assert 'class="dtmf"' in svg and "⌨ #" in svg
    assert 'class="error"' in svg and "error: tts" in svg
    assert 'class="v2v"' in svg and ">800 ms<" in svg


def test_transcripts_are_escaped(timed_call):
    svg = svg_of(timed_call)
    assert "<script>" not in svg and "&lt;script&gt;open&lt;/script&gt;" in svg


def test_the_admin_call_page_shows_the_timeline(admin_client, timed_call):
    html = admin_client.get(f"/admin/calls/call/{timed_call.pk}/change/").content.decode()
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="call-timeline"' in html


def test_a_call_without_audio_positions_has_nothing_to_draw(admin_client):
    call = make_call()
    Turn.objects.create(call=call, index=0, role=TurnRole.BOT, text="Hi")
    assert svg_of(call) == ""
    assert "nothing to draw yet" in admin_client.get(f"/admin/calls/call/{call.pk}/change/").content.decode()
