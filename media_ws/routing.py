"""WebSocket routes: Twilio's bidirectional Media Stream connects to ``/media-stream``."""

from django.urls import path

from media_ws.consumer import MediaStreamConsumer

websocket_urlpatterns = [
    path("media-stream", MediaStreamConsumer.as_asgi()),
]
