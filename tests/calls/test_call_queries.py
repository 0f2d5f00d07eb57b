"""GET /calls/, GET /calls/<call_sid>, GET /calls/<call_sid>/recording and the OpenAPI schema."""

from __future__ import annotations

import uuid

import pytest
from django.core.files.base import ContentFile

from calls.models import Call, CallStatus
from tests.calls.conftest import FROM_NUMBER, TO_NUMBER, make_call

pytestmark = pytest.mark.django_db


def test_list_is_paginated_newest_first_with_barge_in_counts(api, conversation):
    Call.objects.bulk_create(
        [
            Call(
                call_sid=f"CA{i:032x}", status=CallStatus.QUEUED, from_number=FROM_NUMBER, to_number=TO_NUMBER
            )
            for i in range(55)
        ]
    )
    first = api.get("/calls/").json()
    assert first["count"] == 56
    assert len(first["results"]) == 50
    assert first["next"].endswith("/calls/?page=2")
    second = api.get("/calls/?page=2").json()
    assert len(second["results"]) == 6
    listed = first["results"] + second["results"]
    created = [c["created_at"] for c in listed]
    assert created == sorted(created, reverse=True)
    mine = next(c for c in listed if c["call_sid"] == conversation.call_sid)
    assert mine["barge_ins"] == 2
    assert mine["from"] == FROM_NUMBER and mine["to"] == TO_NUMBER
    assert mine["duration_s"] == 31
    assert mine["url"] == f"http://testserver/calls/{conversation.call_sid}"


def test_list_filters_by_status(api):
    make_call(CallStatus.COMPLETED)
    make_call(CallStatus.COMPLETED)
    failed = make_call(CallStatus.FAILED, sid="")
    Call.objects.filter(pk=failed.pk).update(call_sid=None)
    body = api.get("/calls/", {"status": "failed"}).json()
    assert body["count"] == 1
    assert body["results"][0]["id"] == str(failed.id)
    assert body["results"][0]["url"].endswith(f"/calls/{failed.id}")
    assert api.get("/calls/", {"status": "completed"}).json()["count"] == 2
    bad = api.get("/calls/", {"status": "exploded"})
    assert bad.status_code == 400 and "status" in bad.json()


def test_list_needs_authentication(anonymous):
    assert anonymous.get("/calls/").status_code == 401


def test_detail_has_transcript_and_events(api, conversation):
    response = api.get(f"/calls/{conversation.call_sid}")
    assert response.status_code == 200
    body = response.json()
    assert body["call_sid"] == conversation.call_sid
    assert body["greeting"] == "Hello!"
    assert body["metadata"] == {"ticket": "T-1"}
    assert body["barge_ins"] == 2
    assert body["recording"] is None
    assert [t["role"] for t in body["turns"]] == ["caller", "bot"]
    bot = body["turns"][1]
    assert bot["interrupted"] is True
    assert bot["heard_text"] == "Your appointment is on Tuesday at ten,"
    assert (bot["speech_end_ms"], bot["first_audio_ms"], bot["voice_to_voice_ms"]) == (5200, 5790, 590)
    assert [e["kind"] for e in body["events"]] == ["stream_start", "barge_in", "barge_in", "status"]
    assert body["events"][1]["audio_ms"] == 1000


def test_detail_by_id_and_404s(api, conversation):
    assert api.get(f"/calls/{conversation.id}").json()["call_sid"] == conversation.call_sid
    assert api.get(f"/calls/{conversation.call_sid}/").status_code == 200
    assert api.get("/calls/CA" + "0" * 32).status_code == 404
    assert api.get(f"/calls/{uuid.uuid4()}").status_code == 404
    assert api.get("/calls/nonsense").status_code == 404


def test_recording_is_served_to_authenticated_users_only(api, anonymous, conversation, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    assert api.get(f"/calls/{conversation.call_sid}/recording").status_code == 404
    audio = b"RIFF" + b"\x00" * 40 + b"fake pcm"
    conversation.recording.save("call.wav", ContentFile(audio))
    detail = api.get(f"/calls/{conversation.call_sid}").json()
    assert detail["recording"] == f"http://testserver/calls/{conversation.call_sid}/recording"
    response = api.get(f"/calls/{conversation.call_sid}/recording")
    assert response.status_code == 200
    assert response["Content-Type"] in ("audio/wav", "audio/x-wav")
    assert b"".join(response.streaming_content) == audio
    assert anonymous.get(f"/calls/{conversation.call_sid}/recording").status_code == 401


def test_openapi_schema_and_docs_page(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    for path in [
        "/calls/",
        "/calls/outbound",
        "/calls/{call_sid}",
        "/calls/{call_sid}/hangup",
        "/calls/{call_sid}/transfer",
        "/calls/{call_sid}/recording",
    ]:
        assert path in schema["paths"], path
    outbound = schema["paths"]["/calls/outbound"]["post"]
    assert {"201", "400", "502"} <= set(outbound["responses"])
    request_schema = schema["components"]["schemas"]["OutboundCall"]
    assert {"to", "from", "greeting", "instructions", "metadata"} == set(request_schema["properties"])
    assert request_schema["required"] == ["to"]
    assert client.get("/api/docs/").status_code == 200
