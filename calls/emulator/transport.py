"""How the emulated Twilio reaches our server: HTTP for status callbacks, a WebSocket for the stream.

``NetworkTransport`` is what Twilio does: real HTTP requests (httpx) and a real WebSocket client
(``websockets``) to the URLs in the call. ``AsgiTransport`` reaches an ASGI application in the
same process and event loop instead (httpx's ``ASGITransport`` and Channels'
``WebsocketCommunicator``), for tests and benchmarks that want the emulator without a server;
the messages are the same.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
from typing import Any

import httpx

#: Twilio waits up to 15 s for a status-callback response (twilio.com/docs/usage/webhooks).
HTTP_TIMEOUT_S = 15.0


class StreamRefused(Exception):
    """The server refused the WebSocket handshake or could not be reached; ``status`` is the HTTP
    status when there was one (e.g. 403 for a bad ``X-Twilio-Signature``)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StreamConnection(abc.ABC):
    """An open media-stream WebSocket: text frames both ways."""

    @abc.abstractmethod
    async def send(self, text: str) -> None:
        """Send one text frame. Raises when the connection is closed."""

    @abc.abstractmethod
    async def receive(self) -> str | None:
        """The next text frame, or ``None`` once the server has closed the connection."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection (normal closure, 1000). Never raises."""


class Transport(abc.ABC):
    """The emulator's way to our server."""

    @abc.abstractmethod
    def http_client(self) -> httpx.AsyncClient:
        """A new HTTP client for status callbacks (the caller closes it)."""

    @abc.abstractmethod
    async def open_stream(self, url: str, headers: dict[str, str]) -> StreamConnection:
        """Open the WebSocket at ``url`` (``ws://`` or ``wss://``) with ``headers`` on the upgrade
        request. Raises ``StreamRefused``."""


# ---- the network (what Twilio does) ------------------------------------------------------------


class _WebsocketsConnection(StreamConnection):
    def __init__(self, ws: Any) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        await self._ws.send(text)

    async def receive(self) -> str | None:
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                message = await self._ws.recv()
            except ConnectionClosed:
                return None
            if isinstance(message, str):
                return message
            # Twilio ignores binary frames; so do we (the bot side should not send them).

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._ws.close()


class NetworkTransport(Transport):
    """Real HTTP (httpx) and a real WebSocket client (``websockets``), as Twilio uses.

    Proxies from the environment are ignored: Twilio reaches the server directly.
    """

    def __init__(self, open_timeout_s: float = 10.0) -> None:
        self.open_timeout_s = open_timeout_s

    def http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, trust_env=False, follow_redirects=False)

    async def open_stream(self, url: str, headers: dict[str, str]) -> StreamConnection:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus, WebSocketException

        try:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=self.open_timeout_s,
                proxy=None,
                compression=None,
                max_size=2**20,
                user_agent_header="TwilioProxy/1.1 (voicebot emulator)",
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise StreamRefused(f"the server answered the handshake with HTTP {status}", status) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise StreamRefused(f"cannot open the WebSocket {url}: {exc}") from exc
        return _WebsocketsConnection(ws)


# ---- an ASGI application in this process ---------------------------------------------------------


class _CommunicatorConnection(StreamConnection):
    def __init__(self, communicator: Any) -> None:
        self._comm = communicator
        self._server_closed = False  # the application sent websocket.close
        self._disconnected = False  # we told the application the socket is gone

    async def send(self, text: str) -> None:
        if self._server_closed or self._disconnected:
            raise ConnectionError("the stream is closed")
        await self._comm.send_to(text_data=text)

    async def receive(self) -> str | None:
        while not (self._server_closed or self._disconnected):
            try:
                out = await self._comm.receive_output(timeout=3600)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception:  # the application finished (or crashed): the stream is over
                self._server_closed = True
                return None
            if out["type"] == "websocket.close":
                self._server_closed = True
                return None
            if out["type"] == "websocket.send" and out.get("text") is not None:
                return str(out["text"])
        return None

    async def close(self) -> None:
        if self._disconnected:
            return
        self._disconnected = True
        # As Daphne does once the socket is gone (whoever closed it): tell the application and let
        # it finish (it writes the call log), bounded like Daphne's application close timeout.
        with contextlib.suppress(Exception):
            await self._comm.send_input({"type": "websocket.disconnect", "code": 1000})
            await asyncio.wait_for(asyncio.shield(self._comm.future), 10)
        with contextlib.suppress(Exception):
            await self._comm.disconnect()


class AsgiTransport(Transport):
    """Reach ``application`` (an ASGI app, e.g. ``voicebot.asgi.application``) in this event loop."""

    def __init__(self, application: Any) -> None:
        self.application = application

    def http_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.application), timeout=HTTP_TIMEOUT_S)

    async def open_stream(self, url: str, headers: dict[str, str]) -> StreamConnection:
        from urllib.parse import urlsplit

        from channels.testing import WebsocketCommunicator

        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        comm = WebsocketCommunicator(
            self.application,
            path,
            headers=[(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            + [(b"host", parts.netloc.encode("latin-1"))],
        )
        connected, code = await comm.connect(timeout=10)
        if not connected:
            status = 403 if code == 4403 else None
            with contextlib.suppress(Exception):
                await comm.disconnect()
            raise StreamRefused(f"the application refused the WebSocket (close code {code})", status)
        return _CommunicatorConnection(comm)
