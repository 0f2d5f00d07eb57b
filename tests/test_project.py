"""The project boots: settings, URL routing and the ASGI application."""

from django.conf import settings


def test_daphne_is_the_first_installed_app_so_runserver_serves_asgi():
    assert settings.INSTALLED_APPS[0] == "daphne"
    assert settings.ASGI_APPLICATION == "voicebot.asgi.application"


def test_asgi_routes_http_and_the_media_stream_websocket():
    from voicebot.asgi import application

    assert set(application.application_mapping) == {"http", "websocket"}
    routes = application.application_mapping["websocket"].routes
    assert [str(r.pattern) for r in routes] == ["media-stream"]
