"""Engine choice from settings: real engines when keys are set, offline ones otherwise, overrides."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from media_ws.providers import describe_engines, get_llm, get_stt, get_tts, reset_engines
from media_ws.providers.base import TextDelta
from media_ws.providers.clients import deepgram_client, groq_client
from media_ws.providers.deepgram_stt import DeepgramSTT
from media_ws.providers.deepgram_tts import DeepgramTTS
from media_ws.providers.groq_llm import GroqLLM
from tests.fakes.deepgram import FakeDeepgram
from tests.fakes.groq import FakeGroq


@pytest.fixture(autouse=True)
def _fresh_engines(settings: Any) -> Any:
    settings.STT_ENGINE = settings.LLM_ENGINE = settings.TTS_ENGINE = "auto"
    reset_engines()
    yield
    reset_engines()


def test_auto_with_keys_picks_deepgram_and_groq(settings: Any) -> None:
    settings.DEEPGRAM_API_KEY = "dg-key"
    settings.GROQ_API_KEY = "gsk-key"
    assert isinstance(get_stt(), DeepgramSTT)
    assert isinstance(get_llm(), GroqLLM)
    assert isinstance(get_tts(), DeepgramTTS)
    described = describe_engines()
    assert {k: v["engine"] for k, v in described.items()} == {
        "stt": "deepgram",
        "llm": "groq",
        "tts": "deepgram",
    }
    assert described["stt"]["model"] == settings.DEEPGRAM_STT_MODEL
    assert described["llm"]["model"] == settings.GROQ_MODEL
    assert described["tts"]["model"] == settings.DEEPGRAM_TTS_VOICE
    assert "dg-key" not in repr(described) and "gsk-key" not in repr(described)


def test_auto_without_keys_picks_the_offline_engines() -> None:
    described = describe_engines()
    assert {k: v["engine"] for k, v in described.items()} == {
        "stt": "offline",
        "llm": "scripted",
        "tts": "offline",
    }
    assert "is not set" in described["stt"]["reason"]
    # The offline engines are another module's; skip (not fail) while one is not there yet.
    offline_stt = pytest.importorskip("media_ws.providers.offline_stt")
    assert isinstance(get_stt(), offline_stt.PocketsphinxSTT)
    offline_tts = pytest.importorskip("media_ws.providers.offline_tts")
    assert isinstance(get_tts(), offline_tts.EspeakTTS)
    scripted = pytest.importorskip("media_ws.providers.scripted")
    assert isinstance(get_llm(), scripted.ScriptedAgent)


def test_explicit_offline_overrides_a_key(settings: Any) -> None:
    settings.DEEPGRAM_API_KEY = "dg-key"
    settings.GROQ_API_KEY = "gsk-key"
    settings.STT_ENGINE = "offline"
    settings.LLM_ENGINE = "offline"  # an alias of "scripted"
    settings.TTS_ENGINE = "deepgram"
    described = describe_engines()
    assert {k: v["engine"] for k, v in described.items()} == {
        "stt": "offline",
        "llm": "scripted",
        "tts": "deepgram",
    }
    assert isinstance(get_tts(), DeepgramTTS)


@pytest.mark.parametrize(
    ("setting", "value", "key", "getter"),
    [
        ("STT_ENGINE", "deepgram", "DEEPGRAM_API_KEY", get_stt),
        ("LLM_ENGINE", "groq", "GROQ_API_KEY", get_llm),
        ("TTS_ENGINE", "deepgram", "DEEPGRAM_API_KEY", get_tts),
    ],
)
def test_a_real_engine_without_its_key_is_a_configuration_error(
    settings: Any, setting: str, value: str, key: str, getter: Any
) -> None:
    setattr(settings, setting, value)
    with pytest.raises(ImproperlyConfigured, match=key):
        getter()
    assert describe_engines()[setting[:3].lower()]["engine"] == "misconfigured"


def test_an_unknown_engine_name_is_a_configuration_error(settings: Any) -> None:
    settings.TTS_ENGINE = "polly"
    with pytest.raises(
        ImproperlyConfigured, match="TTS_ENGINE='polly' is not one of: auto, deepgram, offline"
    ):
        get_tts()


def test_engines_are_built_once_per_process_until_reset(settings: Any) -> None:
    settings.DEEPGRAM_API_KEY = "dg-key"
    first = get_stt()
    assert get_stt() is first
    reset_engines()
    assert get_stt() is not first


def test_one_sdk_client_per_event_loop(settings: Any) -> None:
    settings.DEEPGRAM_API_KEY = "dg-key"
    settings.GROQ_API_KEY = "gsk-key"

    async def twice() -> tuple[Any, Any]:
        dg1, dg2 = await asyncio.gather(deepgram_client(), deepgram_client())
        g1, g2 = await groq_client(), await groq_client()
        assert dg1 is dg2 and g1 is g2  # concurrent first uses share one build
        return dg1, g1

    dg_a, groq_a = asyncio.run(twice())
    dg_b, groq_b = asyncio.run(twice())
    # A new loop gets new clients: httpx pools are bound to the loop that first used them.
    assert dg_a is not dg_b and groq_a is not groq_b


@pytest.mark.usefixtures("close_sdk_clients")
async def test_the_selected_engines_reach_the_fakes(fake_deepgram: FakeDeepgram, fake_groq: FakeGroq) -> None:
    """Keys set by the fixtures → auto picks the real engines, which talk to the fakes."""
    fake_groq.reply = ["Hi there."]
    events = [e async for e in get_llm().stream([{"role": "user", "content": "hi"}], [])]
    assert events == [TextDelta("Hi there.")]
    audio = b"".join([c async for c in get_tts().synthesize("Hi there.")])
    assert len(audio) == len("Hi there.") * fake_deepgram.ms_per_char * 8
    stream = get_stt().open_stream()
    await stream.start()
    await stream.close()
    assert fake_deepgram.listen_sessions[0].client_messages == ["CloseStream"]
