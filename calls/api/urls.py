"""Routes of the call API, mounted under ``/calls/`` by ``calls/urls.py``.

Each action path also answers with a trailing slash (``POST /calls/outbound/``), because Django's
APPEND_SLASH cannot redirect a POST; only the contract form (no slash) is in the OpenAPI schema.
"""

from __future__ import annotations

from django.urls import URLPattern, path
from rest_framework.views import APIView

from calls.api import views


def route(pattern: str, view: type[APIView], name: str) -> list[URLPattern]:
    """``pattern`` (named ``name``, documented) and ``pattern + "/"`` (same view, not in the schema)."""
    return [path(pattern, view.as_view(), name=name), path(f"{pattern}/", view.as_view(schema=None))]


urlpatterns = [
    path("", views.CallListView.as_view(), name="list"),
    *route("outbound", views.OutboundCallView, "outbound"),
    *route("<str:call_sid>/hangup", views.CallHangupView, "hangup"),
    *route("<str:call_sid>/transfer", views.CallTransferView, "transfer"),
    *route("<str:call_sid>/recording", views.CallRecordingView, "recording"),
    *route("<str:call_sid>", views.CallDetailView, "detail"),
]
