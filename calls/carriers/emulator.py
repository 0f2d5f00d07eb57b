"""The built-in offline carrier: an emulated Twilio that rings a scripted callee.

``EmulatorCarrier.place_call`` behaves like Twilio's ``calls.create(twiml=…)``: it checks the
TwiML, answers at once with a ``CA…`` CallSid and status ``queued``, and the call then proceeds in
the background on the emulator's exchange (``calls/emulator/exchange.py``): signed status
callbacks, the ``<Connect><Stream>`` WebSocket to our own server, the callee's scenario, the
recording. ``hangup`` and ``transfer`` are the REST call updates.

Who answers: the scenario named in the call's ``metadata.scenario``, else the scenario whose
``number`` is the dialed number, else ``EMULATOR_DEFAULT_SCENARIO``. Finding the metadata is the
one database read a carrier does here: the scenario is the emulated callee's behaviour, chosen by
whoever placed the call, and the carrier interface only carries Twilio's own parameters.

The calls live in the process that placed them: the server's, for calls placed through the API
(also by ``manage.py demo`` and ``manage.py place_call``); a management command's, for
``manage.py place_call --in-process``. A hang-up or transfer asked of another process finds no
such call there and gets Twilio's 20404.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from django.conf import settings

from calls.carriers import Carrier, CarrierError, PlacedCall
from calls.emulator.call import CallOrder, TwimlError, parse_call_twiml
from calls.emulator.exchange import Exchange, get_exchange
from calls.emulator.scenario import Scenario, ScenarioError, load_scenario, scenario_for_number
from calls.emulator.stream import new_sid

logger = logging.getLogger(__name__)

#: The account the emulated calls belong to when no ``TWILIO_ACCOUNT_SID`` is set.
EMULATOR_ACCOUNT_SID = "AC" + "0" * 32


def new_call_sid() -> str:
    """A call SID in Twilio's shape: ``"CA"`` followed by 32 lowercase hex digits."""
    return new_sid("CA")


def choose_scenario(call_id: str, to: str) -> Scenario:
    """The callee of a call: ``metadata.scenario`` of the ``Call`` whose id is ``call_id``, else the
    scenario whose ``number`` is ``to``, else ``EMULATOR_DEFAULT_SCENARIO``. Raises
    ``ScenarioError`` when the chosen scenario is unknown or invalid."""
    name = None
    if call_id:
        from calls.models import Call

        try:
            rows = Call.objects.filter(pk=uuid.UUID(str(call_id)))
            metadata = rows.values_list("metadata", flat=True).first()
        except ValueError:
            metadata = None
        if isinstance(metadata, dict) and metadata.get("scenario"):
            name = str(metadata["scenario"])
    name = name or scenario_for_number(to) or settings.EMULATOR_DEFAULT_SCENARIO
    return load_scenario(name)


class EmulatorCarrier(Carrier):
    """Offline stand-in for Twilio; see the module docstring. ``exchange``: where the calls run
    (default: the process's exchange)."""

    name = "emulator"

    def __init__(self, exchange: Exchange | None = None) -> None:
        self._exchange = exchange

    @property
    def exchange(self) -> Exchange:
        return self._exchange if self._exchange is not None else get_exchange()

    def place_call(
        self, *, to: str, from_: str, twiml: str, status_callback: str, call_id: str
    ) -> PlacedCall:
        """Accept the call (``CA…``, status ``queued``) and start it in the background.

        Raises ``CarrierError``: ``12100`` (the TwiML is not a TwiML document), ``unsupported``
        (TwiML other than ``<Connect><Stream>``), ``scenario`` (the callee's scenario is unknown or
        invalid; the message says which file, step and field).
        """
        try:
            stream = parse_call_twiml(twiml)
        except TwimlError as exc:
            raise CarrierError(exc.code, exc.message, 400) from exc
        try:
            scenario = choose_scenario(call_id, to)
        except ScenarioError as exc:
            raise CarrierError("scenario", str(exc), 400) from exc
        sid = new_call_sid()
        account = settings.TWILIO_ACCOUNT_SID or EMULATOR_ACCOUNT_SID
        record = getattr(settings, "EMULATOR_RECORD", True)
        order = CallOrder(
            call_sid=sid,
            account_sid=account,
            to=to,
            from_=from_,
            stream=stream,
            status_callback=status_callback,
            scenario=scenario,
            call_id=call_id,
            auth_token=settings.TWILIO_AUTH_TOKEN,
            plain_http=settings.PUBLIC_BASE_URL.startswith("http://"),
            answer_after_ms=settings.EMULATOR_ANSWER_AFTER_MS,
            max_duration_s=settings.EMULATOR_MAX_CALL_S,
            media_root=Path(settings.MEDIA_ROOT) if record else None,
            update_delay_ms=settings.EMULATOR_UPDATE_DELAY_MS,
        )
        self.exchange.place(order)
        return PlacedCall(call_sid=sid, status="queued", account_sid=account)

    def hangup(self, call_sid: str) -> None:
        """End the call (before it is answered: cancel it). Raises ``CarrierError`` 20404 when
        the call is unknown here or has ended."""
        self.exchange.hangup(call_sid)

    def transfer(self, call_sid: str, twiml: str) -> None:
        """Redirect the live call to ``twiml`` (``<Say>``/``<Dial>``): the stream stops, the
        ``<Dial>`` target is recorded, the call completes. Raises ``CarrierError`` 20404 (unknown
        or ended), 21220 (not answered yet), 12100/``unsupported`` (TwiML it cannot run)."""
        self.exchange.redirect(call_sid, twiml)
