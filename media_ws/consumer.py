"""Placeholder until the live-call consumer lands: accepts the stream and ignores it."""

from channels.generic.websocket import AsyncWebsocketConsumer


class MediaStreamConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
