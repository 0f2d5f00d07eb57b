"""Drive /media-stream as Twilio would, in-process, through Channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from channels.testing import WebsocketCommunicator

from calls.emulator.stream import EmulatedMediaStream

AUDIO = Path(__file__).resolve().parent.parent / "fixtures" / "audio"


def fixture_audio(name: str) -> bytes:
    """A committed real-speech fixture: raw μ-law, 8 kHz."""
    return (AUDIO / f"{name}.ulaw").read_bytes()


@contextlib.asynccontextmanager
async def twilio_stream(
    *, headers: list[tuple[bytes, bytes]] | None = None, **kwargs
) -> AsyncIterator[EmulatedMediaStream]:
    """Connect to the ASGI app at /media-stream and run an emulated Twilio stream on it."""
    from voicebot.asgi import application

    comm = WebsocketCommunicator(application, "/media-stream", headers=headers or [])
    connected, code = await comm.connect(timeout=5)
    assert connected, f"handshake refused with close code {code}"

    async def receive() -> str | None:
        out = await comm.receive_output(timeout=3600)
        if out["type"] == "websocket.close":
            return None
        return out.get("text")

    stream = EmulatedMediaStream(lambda text: comm.send_to(text_data=text), receive, **kwargs)
    runner = asyncio.create_task(stream.run())
    try:
        yield stream
    finally:
        await stream.hang_up()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner, 5)
        # Let the consumer finish its shutdown (it writes the call log) before the app is torn down.
        with contextlib.suppress(Exception):
            await comm.send_input({"type": "websocket.disconnect", "code": 1000})
            await asyncio.wait_for(comm.future, 10)
        with contextlib.suppress(Exception):
            await comm.disconnect()


@pytest.fixture(autouse=True)
def _asgi_application_loaded() -> None:
    """Import the ASGI app before the test runs: its first import runs ``django.setup()``, whose
    logging dictConfig would drop the handler ``caplog`` installed for the test."""
    import voicebot.asgi  # noqa: F401


@pytest.fixture
def speech():
    return fixture_audio


def labelled_onsets(name: str) -> list[tuple[int, int]]:
    """Reference (onset_ms, end_ms) of each utterance in a fixture (Silero v6 labels, labels.json)."""
    import json

    labels = json.loads((AUDIO / "labels.json").read_text())
    return [(u["onset_ms"], u["end_ms"]) for u in labels["fixtures"][name]["utterances"]]


async def db(fn, *args, **kwargs):
    """Run ORM code from an async test."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(fn, thread_sensitive=True)(*args, **kwargs)


def mark_generation(name: str) -> int:
    """Our mark names are ``"<generation>.<seq>"``."""
    return int(name.split(".", 1)[0])
