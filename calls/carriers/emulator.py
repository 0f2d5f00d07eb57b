"""The built-in offline carrier (placeholder).

Until the Twilio emulator lands, ``EmulatorCarrier`` only records that a call was placed: it hands
out a fresh Twilio-shaped call SID with status ``queued`` and keeps nothing else, and hanging up or
transferring always succeeds. The emulator issue replaces these internals with an emulated Twilio
that rings a simulated callee, opens the media stream and posts signed status callbacks; the
interface below stays as it is.
"""

from __future__ import annotations

import logging
import secrets

from calls.carriers import Carrier, PlacedCall

logger = logging.getLogger(__name__)


def new_call_sid() -> str:
    """A call SID in Twilio's shape: ``"CA"`` followed by 32 lowercase hex digits."""
    return "CA" + secrets.token_hex(16)


class EmulatorCarrier(Carrier):
    """Offline stand-in for Twilio; see the module docstring."""

    name = "emulator"

    def place_call(
        self, *, to: str, from_: str, twiml: str, status_callback: str, call_id: str
    ) -> PlacedCall:
        """Accept the call: a new ``CA…`` SID, status ``queued``. Nothing is dialed yet."""
        sid = new_call_sid()
        logger.info("emulator accepted call %s for call_id=%s", sid, call_id)
        return PlacedCall(call_sid=sid, status="queued")

    def hangup(self, call_sid: str) -> None:
        """Always succeeds (no call is live in the placeholder)."""

    def transfer(self, call_sid: str, twiml: str) -> None:
        """Always succeeds (no call is live in the placeholder)."""
