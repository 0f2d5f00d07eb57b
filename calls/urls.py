"""URLs under ``/calls/``: the Twilio status webhook and the call API.

=====================================  ======  ==============================================
path                                   method  what
=====================================  ======  ==============================================
``/calls/``                            GET     list (paginated, ``?status=``)
``/calls/outbound``                    POST    place a call
``/calls/<call_sid>``                  GET     detail with transcript and events
``/calls/<call_sid>/hangup``           POST    end the call
``/calls/<call_sid>/transfer``         POST    hand the call to a person
``/calls/<call_sid>/recording``        GET     the local recording
``/calls/twilio/status``               POST    Twilio status callback (signed)
=====================================  ======  ==============================================

``<call_sid>`` is the CallSid, or the call's id (UUID) for a call that never got one.
"""

from django.urls import include, path

from calls.webhooks import twilio_status_callback

app_name = "calls"

urlpatterns = [
    path("twilio/status", twilio_status_callback, name="twilio-status"),
    path("twilio/status/", twilio_status_callback),
    path("", include("calls.api.urls")),
]
