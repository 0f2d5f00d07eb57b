"""The call log in the Django admin: list, filters, search, the call page, and read-only access."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
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
    header = (
        r'<th scope="col" class="[^"]*column-(\w+)[^"]*">.*?<div class="text">(?:<a [^>]*>|<span>)([^<]*)<'
    )
    headers = dict(re.findall(header, html, re.S))
    assert {
        "status": "Status",
        "to_number": "To",
        "from_number": "From",
        "start": "Start",
        "duration_s": "Duration (s)",
        "barge_ins": "Barge-ins",
    }.items() <= headers.items()


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
    conversation.recording.save("call.wav", ContentFile(b"RIFF-the-recording"))
    html = admin_client.get(f"/admin/calls/call/{conversation.pk}/change/").content.decode()
    src = f"/calls/{conversation.call_sid}/recording"
    assert f'<audio controls preload="none" src="{src}"></audio>' in html
    played = admin_client.get(src)  # what the player fetches, with the admin's session
    assert played.status_code == 200 and played["Content-Type"] in ("audio/x-wav", "audio/wav")
    assert b"".join(played.streaming_content) == b"RIFF-the-recording"


def test_call_logs_cannot_be_added_changed_or_deleted(admin_client, conversation):
    assert admin_client.get("/admin/calls/call/add/").status_code == 403
    assert admin_client.get(f"/admin/calls/call/{conversation.pk}/delete/").status_code == 403
    response = admin_client.post(f"/admin/calls/call/{conversation.pk}/change/", {"status": "failed"})
    assert response.status_code == 403
    conversation.refresh_from_db()
    assert conversation.status == CallStatus.COMPLETED
    assert Call.objects.count() == 1 and CallEvent.objects.filter(kind=EventKind.BARGE_IN).count() == 2


VIEW_PERMISSIONS = ("view_call", "view_turn", "view_callevent")


def staff_user(django_user_model, username: str, *codenames: str):
    user = django_user_model.objects.create_user(username, is_staff=True)
    permissions = Permission.objects.filter(content_type__app_label="calls", codename__in=codenames)
    user.user_permissions.add(*permissions)
    return user


def test_staff_with_the_view_permissions_see_the_call_log_read_only(client, django_user_model, conversation):
    client.force_login(staff_user(django_user_model, "agent", *VIEW_PERMISSIONS))
    assert client.get("/admin/calls/call/").status_code == 200
    page = client.get(f"/admin/calls/call/{conversation.pk}/change/")
    assert page.status_code == 200
    assert "When is my appointment?" in page.content.decode()  # the transcript inline
    assert 'name="_save"' not in page.content.decode()
    assert "Calls" in client.get("/admin/").content.decode()
    assert client.get("/admin/calls/call/add/").status_code == 403
    change = client.post(f"/admin/calls/call/{conversation.pk}/change/", {"status": "failed"})
    assert change.status_code == 403


def test_staff_without_the_view_permissions_get_403(client, django_user_model, conversation):
    client.force_login(staff_user(django_user_model, "intern"))
    assert client.get("/admin/calls/call/").status_code == 403
    assert client.get(f"/admin/calls/call/{conversation.pk}/change/").status_code == 403
    assert client.get("/admin/calls/turn/").status_code == 404  # turns have no admin of their own
    assert "/admin/calls/" not in client.get("/admin/").content.decode()


def test_the_transcript_needs_its_own_view_permission(client, django_user_model, conversation):
    client.force_login(staff_user(django_user_model, "auditor", "view_call"))
    page = client.get(f"/admin/calls/call/{conversation.pk}/change/")
    assert page.status_code == 200
    assert conversation.to_number in page.content.decode()
    assert "When is my appointment?" not in page.content.decode()


def test_non_staff_cannot_view(client, django_user_model, conversation):
    outsider = django_user_model.objects.create_user("outsider")
    client.force_login(outsider)
    assert client.get("/admin/calls/call/").status_code == 302  # to the admin login
