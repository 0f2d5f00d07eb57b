from django.apps import AppConfig


class MediaWsConfig(AppConfig):
    name = "media_ws"
    verbose_name = "Media streams"
