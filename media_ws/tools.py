"""The bot's tools: ``end_call`` and ``transfer_to_human``, offered to the LLM on every turn.

Both act on the live call only through ``get_current_call()``, so they work the same for the real
LLM, the offline scripted agent, or your own code running in a call task.

- ``end_call``: the goodbye plays to its last mark, then the carrier hangs up (REST
  ``status=completed``; a call that already ended is fine), then the stream closes cleanly. If the
  goodbye's marks never come back (pending audio + 5 s), the call is hung up anyway.
- ``transfer_to_human``: say a hand-off line, wait until it has played, then redirect the live call
  with TwiML ``<Dial>`` to ``HUMAN_AGENT_NUMBER`` or the number given. The model's ``to`` is
  untrusted (a caller could talk it into dialling a premium-rate number): it is used only if it is
  ``HUMAN_AGENT_NUMBER`` or listed in ``TRANSFER_ALLOWED_NUMBERS``. With no number configured, a
  refused ``to``, or a carrier that refuses, the bot says it cannot transfer and the call goes on.

If the caller barges in while the goodbye or hand-off line is playing, the response (and the tool
with it) is cancelled before anything irreversible happens: the caller had something to say.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from calls.errors import CallControlError, InvalidPhoneNumber
from calls.phone import parse_e164
from media_ws.context import get_current_call
from media_ws.providers.base import ToolCall, ToolSpec

logger = logging.getLogger(__name__)

END_CALL = ToolSpec(
    name="end_call",
    description=(
        "Hang up the phone call. Use it when the caller says goodbye or the conversation is over. "
        "Say a short goodbye in the same reply before calling it."
    ),
    parameters={
        "type": "object",
        "properties": {
            "reason": {"type": "string", "description": "Why the call is ending, in a few words."}
        },
        "required": ["reason"],
    },
)

TRANSFER_TO_HUMAN = ToolSpec(
    name="transfer_to_human",
    description=(
        "Transfer the caller to a human agent. Use it when the caller asks for a person, or when you "
        "cannot help. Tell the caller you are connecting them in the same reply."
    ),
    parameters={
        "type": "object",
        "properties": {
            "reason": {"type": "string", "description": "Why the caller needs a person."},
            "to": {"type": "string", "description": "E.164 number to dial; omit for the default agent line."},
        },
        "required": ["reason"],
    },
)

TOOLS: list[ToolSpec] = [END_CALL, TRANSFER_TO_HUMAN]


async def end_call(reason: str = "", *, spoke: bool = False) -> str:
    """Play the goodbye to its end, hang up through the carrier and close the stream.

    ``spoke``: the reply that asked for the tool already said something (its goodbye); otherwise
    the default goodbye line (``GOODBYE_LINE``) is said first. Returns the tool result text.
    """
    call = get_current_call()
    if not spoke:
        await call.say(settings.GOODBYE_LINE)
    note = ""
    if not await call.wait_for_playback():  # bounded: the audio still queued at Twilio + 5 s
        if call.response_interrupted():
            return "not ended: the caller interrupted the goodbye"
        # The marks never came back (lost by Twilio or a proxy): the goodbye has had its time.
        logger.warning("call %s: the goodbye's marks did not come back; hanging up anyway", call.call_sid)
        note = "; the goodbye's playback was not confirmed"
    await call.hangup(reason="bot-hangup")
    return (f"call ended ({reason})" if reason else "call ended") + note


async def transfer_to_human(reason: str = "", to: str | None = None, *, spoke: bool = False) -> str:
    """Say a hand-off line, wait for it to play, then redirect the call to a person with ``<Dial>``.

    The target is ``to`` (E.164, from the model: accepted only if it is ``HUMAN_AGENT_NUMBER`` or in
    ``TRANSFER_ALLOWED_NUMBERS``) or else ``HUMAN_AGENT_NUMBER``. With no target, a ``to`` not
    allowed, or when the carrier refuses the transfer, the bot says so
    (``TRANSFER_UNAVAILABLE_LINE``) and the call goes on. Returns the tool result text (the call log
    records it as a ``tool_call`` event). Never raises for a refused or failed transfer.
    """
    call = get_current_call()
    if to and not transfer_allowed(to):
        logger.warning(
            "call %s: the model asked to transfer to %r, which is not an allowed transfer number",
            call.call_sid,
            to,
        )
        await call.say(settings.TRANSFER_UNAVAILABLE_LINE)
        return f"transfer refused: {to} is not an allowed transfer number"
    target = (_e164(to) if to else "") or (settings.HUMAN_AGENT_NUMBER or "").strip()
    if not target:
        await call.say(settings.TRANSFER_UNAVAILABLE_LINE)
        return "transfer unavailable: no human agent number is configured"
    if not spoke:
        await call.say(settings.HANDOFF_LINE)
    note = ""
    if not await call.wait_for_playback():  # bounded: the audio still queued at Twilio + 5 s
        if call.response_interrupted():
            return "not transferred: the caller interrupted the hand-off line"
        # The marks never came back: the hand-off line has had its time; the caller asked for a person.
        logger.warning("call %s: the hand-off line's marks did not come back; transferring anyway",
                       call.call_sid)
        note = "; the hand-off line's playback was not confirmed"
    try:
        await call.transfer(target)
    except CallControlError as exc:
        logger.warning("call %s: transfer to a person failed: %s", call.call_sid, exc)
        await call.say(settings.TRANSFER_UNAVAILABLE_LINE)
        return f"transfer failed: {exc}"
    return f"transferred to {target}" + (f" ({reason})" if reason else "") + note


def _e164(number: str | None) -> str:
    """``number`` in E.164 (``calls.phone.parse_e164``: libphonenumber), or ``""`` if it is not a
    valid number."""
    try:
        return parse_e164(number or "")
    except InvalidPhoneNumber:
        return ""


def transfer_allowed(to: str) -> bool:
    """Whether the model may send the call to ``to``: a valid number that is ``HUMAN_AGENT_NUMBER``
    or one of ``TRANSFER_ALLOWED_NUMBERS`` (compared in E.164, so spaces and dashes do not matter)."""
    allowed = {_e164(n) for n in [settings.HUMAN_AGENT_NUMBER, *settings.TRANSFER_ALLOWED_NUMBERS]} - {""}
    return _e164(to) in allowed


async def run_tool(tool_call: ToolCall, *, spoke: bool) -> str:
    """Run the tool the model asked for; an unknown tool or bad arguments give an error result."""
    args: dict[str, Any] = tool_call.arguments if isinstance(tool_call.arguments, dict) else {}
    reason = str(args.get("reason", ""))
    if tool_call.name == END_CALL.name:
        return await end_call(reason, spoke=spoke)
    if tool_call.name == TRANSFER_TO_HUMAN.name:
        to = args.get("to")
        return await transfer_to_human(reason, str(to) if to else None, spoke=spoke)
    logger.warning(
        "call %s: the model asked for an unknown tool %r", get_current_call().call_sid, tool_call.name
    )
    return f"error: there is no tool named {tool_call.name!r}"
