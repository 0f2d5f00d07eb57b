"""Fixtures of the engine tests: the Deepgram and Groq protocol fakes, and real-speech fixtures.

``fake_deepgram`` / ``fake_groq`` (defined in ``tests.fakes``) start a fake on 127.0.0.1, point the
settings at it and reset the engines; other test folders can import them the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.deepgram import fake_deepgram  # noqa: F401  (fixture)
from tests.fakes.groq import fake_groq  # noqa: F401  (fixture)

AUDIO = Path(__file__).resolve().parent.parent / "fixtures" / "audio"


def fixture_audio(name: str) -> bytes:
    """A committed real-speech fixture: raw μ-law, 8 kHz, mono."""
    return (AUDIO / f"{name}.ulaw").read_bytes()


def speech_segments(name: str) -> list[tuple[int, int]]:
    """Independent speech labels of a fixture (Silero VAD, see labels.json): ``[(onset_ms, end_ms)]``."""
    labels = json.loads((AUDIO / "labels.json").read_text())
    return [(s["onset_ms"], s["end_ms"]) for s in labels["fixtures"][name]["segments"]]


@pytest.fixture(autouse=True)
def _no_real_keys(settings: Any) -> None:
    """Whatever the developer's .env says, these tests never reach a real service."""
    for name in ("DEEPGRAM_API_KEY", "GROQ_API_KEY"):
        setattr(settings, name, "")
    settings.DEEPGRAM_API_URL = "http://127.0.0.1:9"
    settings.DEEPGRAM_WS_URL = "ws://127.0.0.1:9"
    settings.GROQ_BASE_URL = "http://127.0.0.1:9"


@pytest.fixture
async def close_sdk_clients() -> Any:
    """Close the SDK clients built in this test's event loop when it ends (their pooled
    connections would otherwise outlive the loop). Production has one loop per process."""
    from media_ws.providers.clients import aclose_clients

    yield
    await aclose_clients()
