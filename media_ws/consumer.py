"""The Twilio Media Streams WebSocket at ``/media-stream``: a thin shell around ``CallSession``.

It authenticates the handshake, parses each text frame with ``MediaStreamParser``, hands events
to the call's session and forwards channel-layer control messages (``call.hangup``,
``call.transfer`` on group ``call_<CallSid>``, see ``calls.services``) from the API, tools or
other processes.

Close codes we send: ``4403`` before ``accept()`` for a handshake without a valid
``X-Twilio-Signature`` (Daphne answers HTTP 403); ``1008`` (RFC 6455 policy violation) for a
``start`` we refuse (another account's, or for a call already ended: a replay); ``1011`` when the
call session cannot be opened; ``1000`` after Twilio's ``stop``.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from twilio.request_validator import RequestValidator

from calls.errors import CallNotActive
from calls.services import group_name
from calls.twiml import media_stream_url
from media_ws.errors import ProtocolError
from media_ws.frame_timing import FrameTiming
from media_ws.protocol import Dtmf, Mark, Media, MediaStreamParser, Start, Stop
from media_ws.session import CallSession, open_session

logger = logging.getLogger(__name__)

#: Close code for a refused handshake; sent before ``accept()``, Daphne answers HTTP 403.
FORBIDDEN = 4403
#: Close code for a refused ``start`` (wrong ``accountSid``, or the call already ended).
POLICY_VIOLATION = 1008
#: Close code when the call session cannot be opened.
INTERNAL_ERROR = 1011


def handshake_signature_ok(scope: dict[str, Any], auth_token: str) -> bool:
    """Check ``X-Twilio-Signature`` on the WebSocket upgrade request (ASGI ``scope``).

    Twilio signs the ``wss://`` URL it connected to, the ``<Stream url>`` of our TwiML
    (``calls.twiml.media_stream_url()``, from ``PUBLIC_BASE_URL``), with HMAC-SHA1 of the auth
    token and no parameters (a GET upgrade has no body). The same URL with ``https://`` is also
    accepted: behind a TLS-terminating proxy Twilio's own code reports signing either form
    (docs/reference A6, twilio.com/docs/usage/webhooks/webhooks-security). Returns ``False`` for a
    missing or wrong signature; never raises.
    """
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    signature = headers.get("x-twilio-signature", "")
    if not signature:
        return False
    url = media_stream_url()
    query = scope.get("query_string", b"").decode("latin-1")
    if query:
        url = f"{url}?{query}"
    validator = RequestValidator(auth_token)
    return any(validator.validate(signed, {}, signature) for signed in (url, "https" + url[len("wss") :]))


class MediaStreamConsumer(AsyncWebsocketConsumer):
    """One Twilio Media Stream (one call): Twilio's JSON text frames in, bot audio frames out.

    Inbound frames are Twilio's ``connected``, ``start``, ``media``, ``mark``, ``dtmf`` and
    ``stop`` messages (``media_ws.protocol``). A bad frame, or any error while handling one, is
    logged with the callSid (never the payload), counted as a protocol error and dropped; the call
    goes on. Control messages arrive on channel-layer group ``call_<CallSid>``:
    ``{"type": "call.hangup", "reason": str}`` and ``{"type": "call.transfer", "to": "+E164"}``.
    """

    session: CallSession | None = None
    group: str | None = None
    #: Set only when MEDIA_FRAME_TIMING_FILE is (benchmarks): one attribute check per frame otherwise.
    frame_timing: FrameTiming | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels >= 4.2 hops to a thread to close old DB connections before every handler: on a
        # 50-frames-a-second stream that multiplies the per-message cost 3-4x. This consumer only
        # touches the ORM through database_sync_to_async (which closes connections itself), so the
        # frame path skips the hop. Other message types keep the default behaviour.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def connect(self) -> None:
        """Accept the upgrade, or close with 4403 (HTTP 403) if ``TWILIO_AUTH_TOKEN`` is set and
        the request is not signed by Twilio."""
        token = settings.TWILIO_AUTH_TOKEN
        if token and not handshake_signature_ok(self.scope, token):
            client = self.scope.get("client") or ("?", 0)
            logger.warning(
                "media stream handshake from %s refused: bad or missing X-Twilio-Signature", client[0]
            )
            await self.close(code=FORBIDDEN)
            return
        self.parser = MediaStreamParser()
        self.rejected = 0
        if settings.MEDIA_FRAME_TIMING_FILE:
            self.frame_timing = FrameTiming(settings.MEDIA_FRAME_TIMING_FILE)
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle one Twilio message (a JSON text frame; UTF-8 bytes are accepted too). Never raises."""
        try:
            event = self.parser.receive(text_data if text_data is not None else (bytes_data or b""))
            if type(event) is Media:
                if self.session is not None:
                    await self.session.on_media(event)
                    if self.frame_timing is not None:
                        self.frame_timing.record(text_data)
            elif type(event) is Mark:
                if self.session is not None:
                    self.session.on_mark(event)
            elif type(event) is Start:
                await self._start(event)
            elif type(event) is Dtmf:
                if self.session is not None:
                    await self.session.on_dtmf(event)
            elif type(event) is Stop:
                try:
                    if self.session is not None:
                        await self.session.shutdown("stop")
                finally:
                    await self.close()
        except Exception as exc:
            self._reject(exc)

    def _reject(self, exc: Exception) -> None:
        self.rejected += 1
        if isinstance(exc, ProtocolError):
            reason, log, exc_info = str(exc), logger.warning, None  # str(exc) never quotes the payload
        else:
            reason, log, exc_info = f"internal error: {type(exc).__name__}", logger.error, exc
        if self.rejected <= 5 or self.rejected % 100 == 0:
            call_sid = self.parser.call_sid or "-"
            text = "call %s: dropped a media-stream message (%d so far): %s"
            log(text, call_sid, self.rejected, reason, exc_info=exc_info)
        if self.session is not None:
            self.session.on_protocol_error(reason, self.rejected)

    async def _start(self, start: Start) -> None:
        account = settings.TWILIO_ACCOUNT_SID
        if account and start.account_sid != account:
            logger.warning(
                "call %s: start refused: accountSid %s is not ours", start.call_sid, start.account_sid
            )
            await self.close(code=POLICY_VIOLATION, reason="accountSid does not match")
            return
        try:
            self.session = await open_session(start, send=self._send_text, close=self.close)
        except CallNotActive as exc:
            logger.warning("call %s: start refused: %s", start.call_sid, exc)
            await self.close(code=POLICY_VIOLATION, reason="call already ended")
            return
        except Exception:
            # No session, no conversation: close the stream, so the call ends instead of hanging silent.
            logger.exception("call %s: could not open the call session; closing the stream", start.call_sid)
            await self.close(code=INTERNAL_ERROR)
            return
        try:
            await self.channel_layer.group_add(group_name(start.call_sid), self.channel_name)
        except Exception as exc:
            # The call goes on (the caller is talking to the bot), but API hang-ups and transfers
            # cannot reach it: say so plainly, it is not a protocol error of Twilio's.
            logger.error(
                "call %s: could not join group %s (channel layer down?): API hang-up and transfer "
                "will not reach this call",
                start.call_sid,
                group_name(start.call_sid),
                exc_info=exc,
            )
            self.session.on_control_unreachable(repr(exc))
            return
        self.group = group_name(start.call_sid)

    async def _send_text(self, text: str) -> None:
        await self.send(text_data=text)

    async def disconnect(self, code: int) -> None:
        """The socket closed (``code`` 1000/1001: a normal end): finish the session, leave the group."""
        if self.session is not None:
            await self.session.shutdown("stop" if code in (1000, 1001) else f"disconnect-{code}")
        if self.frame_timing is not None:
            self.frame_timing.write(self.parser.call_sid or "-")
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def call_hangup(self, event: dict[str, Any]) -> None:
        """``{"type": "call.hangup", "reason": <EndReason>}``: the call was hung up at the carrier."""
        if self.session is not None:
            await self.session.on_remote_hangup(str(event.get("reason", "")))

    async def call_transfer(self, event: dict[str, Any]) -> None:
        """``{"type": "call.transfer", "to": "+E164"}``: the call was redirected to a person."""
        if self.session is not None:
            await self.session.on_remote_transfer(str(event.get("to", "")))
