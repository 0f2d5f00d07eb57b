"""ASGI entry point: HTTP goes to Django, the WebSocket path ``/media-stream`` to ``media_ws``.

Served by Daphne (``python manage.py runserver`` or ``daphne voicebot.asgi:application``).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicebot.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from media_ws.routing import websocket_urlpatterns  # noqa: E402

# No AllowedHostsOriginValidator on purpose: Twilio sends no Origin header; the stream handshake
# is authenticated by X-Twilio-Signature instead (media_ws/consumer.py).
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
