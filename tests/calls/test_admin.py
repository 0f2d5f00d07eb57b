"""The call log in the Django admin: list, filters, search, the call page, and read-only access."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

from calls.models import Call, CallEvent, CallStatus, EventKind
from tests.calls.conftest import make_call

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, django_user_model):
    superuser = django_user_model.objects.create_superuser("boss", email="boss@example.com")
    client.force_login(superuser)
    return client


def test_changelist_shows_status_numbers_duration_and_barge_ins(admin_client, conversation):
    quiet = make_call(CallStatus.NO_ANSWER)
    response = admin_client.get("/admin/calls/call/")
    assert response.status_code == 200
    html = response.content.decode()
    rows = {row.call_sid: row for row in response.context["cl"].result_list}
    assert rows[conversation.call_sid]._barge_ins == 2
    assert rows[quiet.call_sid]._barge_ins == 0
    assert '<td class="field-barge_ins">2</td>' in html
    assert '<td class="field-duration_s">31</td>' in html
    assert conversation.to_number in html and conversation.from_number in html
    for column in ("status", "to", "from", "created", "duration", "barge-ins"):
        assert column in html.lower()


def test_changelist_filters_and_search(admin_client, conversation):
    other = make_call(CallStatus.BUSY, to_number="+12025550123")
    by_status = admin_client.get("/admin/calls/call/", {"status__exact": "busy"})
    assert [c.pk for c in by_status.context["cl"].result_list] == [other.pk]
    by_direction = admin_client.get("/admin/calls/call/", {"direction__exact": "outbound-api"})
    assert by_direction.context["cl"].result_count == 2
    by_number = admin_client.get("/admin/calls/call/", {"q": "+12025550123"})
    assert [c.pk for c in by_number.context["cl"].result_list] == [other.pk]
    by_sid = admin_client.get("/admin/calls/call/", {"q": conversation.call_sid})
    assert [c.pk for c in by_sid.context["cl"].result_list] == [conversation.pk]
    filters = {spec.title for spec in by_sid.context["cl"].filter_specs}
    assert {"status", "direction", "created at"} <= filters


def test_call_page_shows_the_transcript_and_events_read_only(admin_client, conversation):
    response = admin_client.get(f"/admin/calls/call/{conversation.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Your appointment is on Tuesday at ten, and please bring your card." in html
    assert "Your appointment is on Tuesday at ten," in html  # heard text
    assert "When is my appointment?" in html
    assert "590" in html  # voice-to-voice ms
    assert html.count("barge-in") >= 2
    assert "no recording" in html
    assert 'name="_save"' not in html  # view-only: no save button
    assert "<textarea" not in html and 'type="text"' not in html.split("changelist-search")[-1]


def test_call_page_plays_a_recording(admin_client, conversation, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    conversation.recording.save("call.wav", ContentFile(b"RIFF"))
    html = admin_client.get(f"/admin/calls/call/{conversation.pk}/change/").content.decode()
    assert f'<audio controls preload="none" src="/calls/{conversation.call_sid}/recording"></audio>' in html


def test_call_logs_cannot_be_added_changed_or_deleted(admin_client, conversation):
    assert admin_client.get("/admin/calls/call/add/").status_code == 403
    assert admin_client.get(f"/admin/calls/call/{conversation.pk}/delete/").status_code == 403
    response = admin_client.post(f"/admin/calls/call/{conversation.pk}/change/", {"status": "failed"})
    assert response.status_code == 403
    conversation.refresh_from_db()
    assert conversation.status == CallStatus.COMPLETED
    assert Call.objects.count() == 1 and CallEvent.objects.filter(kind=EventKind.BARGE_IN).count() == 2


def test_staff_can_view_and_non_staff_cannot(client, django_user_model, conversation):
    staff = django_user_model.objects.create_user("agent", is_staff=True)
    client.force_login(staff)
    assert client.get("/admin/calls/call/").status_code == 200
    assert client.get(f"/admin/calls/call/{conversation.pk}/change/").status_code == 200
    assert "Calls" in client.get("/admin/").content.decode()
    outsider = django_user_model.objects.create_user("outsider")
    client.force_login(outsider)
    assert client.get("/admin/calls/call/").status_code == 302  # to the admin login
