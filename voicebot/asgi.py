"""ASGI entry point: HTTP goes to Django, the WebSocket path ``/media-stream`` to ``media_ws``.

Served by Daphne (``python manage.py runserver`` or ``daphne voicebot.asgi:application``).
"""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voicebot.settings")

from django.core.asgi import get_asgi_application

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from media_ws import providers  # noqa: E402
from media_ws.routing import websocket_urlpatterns  # noqa: E402

# No AllowedHostsOriginValidator on purpose: Twilio sends no Origin header; the stream handshake
# is authenticated by X-Twilio-Signature instead (media_ws/consumer.py).
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)

# Build the speech and language engines now: their imports and set-up block, and the first call
# would otherwise pay for them (BENCHMARKS.md: p99 frame delay 42-61 ms on a fresh process).
providers.warm_up()

# Everything loaded so far lives as long as the process: move it out of the garbage collector's
# way. Measured under load (BENCHMARKS.md, part 2): the full-collection pause fell from 58 to 16 ms.
gc.freeze()
