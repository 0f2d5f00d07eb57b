"""Speech and language engines behind small interfaces (see ``base``), chosen by settings.

``get_stt()``, ``get_llm()`` and ``get_tts()`` return the process's engine of each kind, built on
first use and then reused (engines hold no per-call state; per-call state lives in the streams
they open). The choice, per setting:

================  =====================================================  ===========================
setting           values                                                 ``auto`` means
================  =====================================================  ===========================
``STT_ENGINE``    ``auto`` | ``deepgram`` | ``offline``                    Deepgram if ``DEEPGRAM_API_KEY``
``LLM_ENGINE``    ``auto`` | ``groq`` | ``scripted`` (alias ``offline``)   Groq if ``GROQ_API_KEY``
``TTS_ENGINE``    ``auto`` | ``deepgram`` | ``offline``                    Deepgram if ``DEEPGRAM_API_KEY``
================  =====================================================  ===========================

The offline engines (pocketsphinx, the scripted agent, espeak-ng) and the SDK-backed ones are
imported only when chosen, so importing this package costs nothing and works without them. An
explicit real engine without its key, or an unknown value, raises ``ImproperlyConfigured``.
``reset_engines()`` forgets the engines and the SDK clients (tests that change settings call it).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from media_ws.providers.base import LanguageModel, SpeechToText, TextToSpeech

logger = logging.getLogger(__name__)

__all__ = ["describe_engines", "get_llm", "get_stt", "get_tts", "reset_engines", "warm_up"]


@dataclass(frozen=True)
class _Choice:
    engine: str  # "deepgram" | "groq" | "offline" | "scripted"
    reason: str


_ALIASES = {"stt": {}, "llm": {"offline": "scripted"}, "tts": {}}
_REAL = {
    "stt": ("deepgram", "DEEPGRAM_API_KEY"),
    "llm": ("groq", "GROQ_API_KEY"),
    "tts": ("deepgram", "DEEPGRAM_API_KEY"),
}
_OFFLINE = {"stt": "offline", "llm": "scripted", "tts": "offline"}
_SETTING = {"stt": "STT_ENGINE", "llm": "LLM_ENGINE", "tts": "TTS_ENGINE"}


def _choose(kind: str) -> _Choice:
    setting = _SETTING[kind]
    real, key_setting = _REAL[kind]
    offline = _OFFLINE[kind]
    raw = str(getattr(settings, setting, "auto") or "auto").strip().lower()
    value = _ALIASES[kind].get(raw, raw)
    has_key = bool(getattr(settings, key_setting, ""))
    if value == "auto":
        if has_key:
            return _Choice(real, f"{setting}=auto and {key_setting} is set")
        return _Choice(offline, f"{setting}=auto and {key_setting} is not set")
    if value == real:
        if not has_key:
            raise ImproperlyConfigured(
                f"{setting}={raw} needs {key_setting}; set it, or use {setting}=auto / {setting}={offline}"
            )
        return _Choice(real, f"{setting}={raw}")
    if value == offline:
        return _Choice(offline, f"{setting}={raw}")
    valid = ", ".join(["auto", real, offline, *_ALIASES[kind]])
    raise ImproperlyConfigured(f"{setting}={raw!r} is not one of: {valid}")


def _build(kind: str, engine: str) -> Any:
    # Imports are local: each pulls in an SDK or an offline model only when that engine is used.
    if kind == "stt":
        if engine == "deepgram":
            from media_ws.providers.deepgram_stt import DeepgramSTT

            return DeepgramSTT()
        from media_ws.providers.offline_stt import PocketsphinxSTT

        return PocketsphinxSTT()
    if kind == "llm":
        if engine == "groq":
            from media_ws.providers.groq_llm import GroqLLM

            return GroqLLM()
        from media_ws.providers.scripted import ScriptedAgent

        return ScriptedAgent()
    if engine == "deepgram":
        from media_ws.providers.deepgram_tts import DeepgramTTS

        return DeepgramTTS()
    from media_ws.providers.offline_tts import EspeakTTS

    return EspeakTTS()


_engines: dict[str, Any] = {}
_lock = threading.Lock()


def _get(kind: str) -> Any:
    engine = _engines.get(kind)
    if engine is not None:
        return engine
    with _lock:
        engine = _engines.get(kind)
        if engine is None:
            engine = _engines[kind] = _build(kind, _choose(kind).engine)
        return engine


def get_stt() -> SpeechToText:
    """The process's speech-to-text engine (``STT_ENGINE``). Raises ``ImproperlyConfigured``."""
    return _get("stt")


def get_llm() -> LanguageModel:
    """The process's language model (``LLM_ENGINE``). Raises ``ImproperlyConfigured``."""
    return _get("llm")


def get_tts() -> TextToSpeech:
    """The process's text-to-speech engine (``TTS_ENGINE``). Raises ``ImproperlyConfigured``."""
    return _get("tts")


def reset_engines() -> None:
    """Forget the cached engines and SDK clients; the next ``get_*()`` reads the settings again."""
    from media_ws.providers.clients import forget_clients

    with _lock:
        _engines.clear()
    forget_clients()


def describe_engines() -> dict[str, dict[str, str]]:
    """Which engine each kind uses and why, for logs and the README; never includes keys.

    ``{"stt": {"engine": "deepgram", "model": "nova-3", "reason": "STT_ENGINE=auto and
    DEEPGRAM_API_KEY is set"}, "llm": {...}, "tts": {...}}``. A misconfiguration is reported as
    ``{"engine": "misconfigured", "reason": <message>}`` instead of raising.
    """
    models = {
        ("stt", "deepgram"): settings.DEEPGRAM_STT_MODEL,
        ("llm", "groq"): settings.GROQ_MODEL,
        ("tts", "deepgram"): settings.DEEPGRAM_TTS_VOICE,
        ("stt", "offline"): "pocketsphinx",
        ("llm", "scripted"): "scripted agent",
        ("tts", "offline"): "espeak-ng",
    }
    out: dict[str, dict[str, str]] = {}
    for kind in ("stt", "llm", "tts"):
        try:
            choice = _choose(kind)
        except ImproperlyConfigured as exc:
            out[kind] = {"engine": "misconfigured", "model": "", "reason": str(exc)}
            continue
        out[kind] = {
            "engine": choice.engine,
            "model": str(models[(kind, choice.engine)]),
            "reason": choice.reason,
        }
    return out


def warm_up() -> dict[str, dict[str, str]]:
    """Build the process's three engines now (at server start) rather than on the first call.

    Importing an SDK and building an engine blocks (the Deepgram SDK's imports take about 0.3 s;
    the offline STT starts its worker processes): done here, the first call does not pay for it.
    A misconfigured engine raises ``ImproperlyConfigured`` here, at startup. Returns
    ``describe_engines()``.
    """
    get_stt()
    get_llm()
    get_tts()
    described = describe_engines()
    summary = ", ".join(f"{kind} {d['engine']} ({d['reason']})" for kind, d in described.items())
    logger.info("engines: %s", summary)
    return described
