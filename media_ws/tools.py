"""The bot's tools: ``end_call`` and ``transfer_to_human``, offered to the LLM on every turn.

Both act on the live call only through ``get_current_call()``, so they work the same for the real
LLM, the offline scripted agent, or your own code running in a call task.

- ``end_call``: the goodbye plays to its last mark, then the carrier hangs up (REST
  ``status=completed``; a call that already ended is fine), then the stream closes cleanly.
- ``transfer_to_human``: say a hand-off line, wait until it has played, then redirect the live call
  with TwiML ``<Dial>`` to ``HUMAN_AGENT_NUMBER`` or the number given. With no number configured, or
  if the carrier refuses, the bot says it cannot transfer and the call goes on.

If the caller barges in while the goodbye or hand-off line is playing, the response (and the tool
with it) is cancelled before anything irreversible happens: the caller had something to say.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings

from calls.errors import CallControlError
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
    if not await call.wait_for_playback(timeout_s=30):
        return "not ended: the goodbye did not finish playing"
    await call.hangup(reason="bot-hangup")
    return f"call ended ({reason})" if reason else "call ended"


async def transfer_to_human(reason: str = "", to: str | None = None, *, spoke: bool = False) -> str:
    """Say a hand-off line, wait for it to play, then redirect the call to a person with ``<Dial>``.

    The target is ``to`` (E.164) or ``HUMAN_AGENT_NUMBER``. With neither, or when the carrier refuses
    the transfer, the bot says so (``TRANSFER_UNAVAILABLE_LINE``) and the call goes on. Returns the
    tool result text.
    """
    call = get_current_call()
    target = (to or settings.HUMAN_AGENT_NUMBER or "").strip()
    if not target:
        await call.say(settings.TRANSFER_UNAVAILABLE_LINE)
        return "transfer unavailable: no human agent number is configured"
    if not spoke:
        await call.say(settings.HANDOFF_LINE)
    if not await call.wait_for_playback(timeout_s=30):
        return "not transferred: the hand-off line did not finish playing"
    try:
        await call.transfer(target)
    except CallControlError as exc:
        logger.warning("call %s: transfer to a person failed: %s", call.call_sid, exc)
        await call.say(settings.TRANSFER_UNAVAILABLE_LINE)
        return f"transfer failed: {exc}"
    return f"transferred to {target}" + (f" ({reason})" if reason else "")


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
