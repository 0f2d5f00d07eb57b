"""Settings for the voicebot project, read from the environment.

Every setting comes from an environment variable (or a ``.env`` file next to ``manage.py``), parsed
by django-environ. ``.env.example`` lists each one with its default. With nothing set at all the
project runs embedded: SQLite, the in-memory channel layer, the emulated Twilio carrier and the
offline speech engines.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

TESTING = "pytest" in sys.modules or env.bool("VOICEBOT_TESTING", default=False)

# --- Django core -----------------------------------------------------------------------------
DEBUG = env.bool("DEBUG", default=True)
# The default key is for local use only; set SECRET_KEY in any deployment.
SECRET_KEY = env("SECRET_KEY", default="dev-insecure-only-for-local-use-change-me")
PUBLIC_BASE_URL = env("PUBLIC_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
_public_host = urlsplit(PUBLIC_BASE_URL).hostname or "127.0.0.1"
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[_public_host, "127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[PUBLIC_BASE_URL])

INSTALLED_APPS = [
    "daphne",  # first, so `manage.py runserver` is Daphne's ASGI server
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "calls",
    "media_ws",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "voicebot.urls"
ASGI_APPLICATION = "voicebot.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: SQLite unless DATABASE_URL is set ---------------------------------------------
# Set but empty (`DATABASE_URL=` in .env or CI) means unset, as for REDIS_URL.
_database_url = env("DATABASE_URL", default="") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
DATABASES = {"default": env.db_url_config(_database_url)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several threads (the emulator, database_sync_to_async) write at once; wait instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # Take the write lock when a transaction begins: a deferred transaction that reads, then writes,
    # fails at once with "database is locked" when another connection writes meanwhile (the busy
    # timeout cannot help an upgrade), e.g. a status callback racing the call log.
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    if TESTING:
        # The end-to-end tests run Daphne in a forked process, which needs a file database; a name
        # unique to this process lets several test runs share a machine.
        DATABASES["default"]["TEST"] = {
            "NAME": str(Path(tempfile.gettempdir()) / f"voicebot-test-{uuid.uuid4().hex[:12]}.sqlite3")
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer: in-memory unless REDIS_URL is set ----------------------------------------
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 reads with a 5 s socket timeout by default, no longer than channels_redis's
            # 5 s blocking pop: an idle receive() then raised TimeoutError and killed the consumer
            # (a live call) after 5 s without channel-layer messages. Reads must outlast the pop.
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                "prefix": env("CHANNEL_LAYER_PREFIX", default="voicebot"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "media")))

# --- REST framework ---------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"dial": env("DIAL_THROTTLE_RATE", default="30/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "voicebot API",
    "DESCRIPTION": "Outbound voice-bot calls over Twilio Media Streams: dial, inspect, hang up, transfer.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the drf-spectacular-sidecar package, not a CDN: the docs page works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Carrier (Twilio or the built-in emulator) ------------------------------------------------
TWILIO_ACCOUNT_SID = env("TWILIO_ACCOUNT_SID", default="")
TWILIO_AUTH_TOKEN = env("TWILIO_AUTH_TOKEN", default="")
TWILIO_FROM_NUMBER = env("TWILIO_FROM_NUMBER", default="+15005550006")
# Where twilio-python sends REST calls; only tests and fakes change it.
TWILIO_API_BASE_URL = env("TWILIO_API_BASE_URL", default="")
TWILIO_TIMEOUT_S = env.float("TWILIO_TIMEOUT_S", default=10.0)
# "auto": Twilio when an account SID and auth token are set, else the emulator.
CARRIER = env("CARRIER", default="auto")
HUMAN_AGENT_NUMBER = env("HUMAN_AGENT_NUMBER", default="")
# Destinations allowed for outbound calls: country calling codes ("1", "44") or E.164 prefixes
# ("+1415"). Empty means only the caller ID's own country (toll-fraud protection).
DIAL_ALLOWED_DESTINATIONS = env.list("DIAL_ALLOWED_DESTINATIONS", default=[])
# Numbers (E.164, comma-separated) the LLM's transfer_to_human may name besides HUMAN_AGENT_NUMBER;
# any other number it gives is refused (a caller could talk the model into a premium-rate number).
TRANSFER_ALLOWED_NUMBERS = env.list("TRANSFER_ALLOWED_NUMBERS", default=[])
# Spoken to the caller (<Say>) before a transfer's <Dial>, unless the bot already said its own line.
TRANSFER_ANNOUNCEMENT = env(
    "TRANSFER_ANNOUNCEMENT", default="Please hold while I connect you to a member of our team."
)

# --- The built-in Twilio emulator (calls/emulator/, used when the carrier is "emulator") ------
# Who answers an emulated call whose metadata names no scenario and whose number is no
# scenario's `number`; extra folders of scenario files (comma-separated), searched first.
EMULATOR_DEFAULT_SCENARIO = env("EMULATOR_DEFAULT_SCENARIO", default="default")
EMULATOR_SCENARIO_DIRS = env.list("EMULATOR_SCENARIO_DIRS", default=[])
# Ringing time before the emulated callee answers (ms), and the longest an emulated call lasts (s).
EMULATOR_ANSWER_AFTER_MS = env.int("EMULATOR_ANSWER_AFTER_MS", default=1000)
EMULATOR_MAX_CALL_S = env.float("EMULATOR_MAX_CALL_S", default=300.0)
# Write each emulated call's stereo recording to MEDIA_ROOT/recordings/<CallSid>.wav.
EMULATOR_RECORD = env.bool("EMULATOR_RECORD", default=True)
# Between accepting a REST hang-up or redirect and sending the stream's `stop` (ms): Twilio applies
# call updates asynchronously. 0: the stop may overtake the REST response (the bot must cope).
EMULATOR_UPDATE_DELAY_MS = env.int("EMULATOR_UPDATE_DELAY_MS", default=250)

# --- Conversation -----------------------------------------------------------------------------
DEFAULT_GREETING = env(
    "DEFAULT_GREETING",
    default=(
        "Hello! This is the voicebot assistant calling. I can answer questions about your "
        "appointment, or connect you with a person. How can I help you today?"
    ),
)
DEFAULT_INSTRUCTIONS = env(
    "DEFAULT_INSTRUCTIONS",
    default=(
        "You are a friendly, concise phone assistant. Answer in one or two short spoken sentences. "
        "If the caller asks for a person, call transfer_to_human. When the caller says goodbye or the "
        "conversation is finished, say a short goodbye and call end_call."
    ),
)
# After the bot finishes speaking, SILENCE_TIMEOUT_S without caller speech gives a re-prompt;
# SILENCE_MAX_REPROMPTS re-prompts in a row with no answer end the call politely.
# Bot audio goes to Twilio at most this far ahead of real-time playout (ms): enough to ride out
# network and event-loop jitter, little enough that a barge-in's clear throws little away.
PLAYBACK_LEAD_MS = env.int("PLAYBACK_LEAD_MS", default=500)
SILENCE_TIMEOUT_S = env.float("SILENCE_TIMEOUT_S", default=8.0)
SILENCE_MAX_REPROMPTS = env.int("SILENCE_MAX_REPROMPTS", default=2)
# Fixed lines the bot says without the LLM.
REPROMPT_LINE = env("REPROMPT_LINE", default="Are you still there? I'm happy to help if you have a question.")
SILENCE_GOODBYE_LINE = env(
    "SILENCE_GOODBYE_LINE", default="I haven't heard anything, so I'll end the call now. Goodbye!"
)
GOODBYE_LINE = env("GOODBYE_LINE", default="Thank you for calling. Goodbye!")
HANDOFF_LINE = env("HANDOFF_LINE", default="One moment please, I'm connecting you with a person.")
TRANSFER_UNAVAILABLE_LINE = env(
    "TRANSFER_UNAVAILABLE_LINE",
    default="I'm sorry, I can't connect you with a person right now, but I'm happy to keep helping.",
)
APOLOGY_LINE = env(
    "APOLOGY_LINE", default="Sorry, I'm having a little trouble right now. Could you say that again?"
)
# Keypad digits as shortcuts on every engine (offline transcription is approximate; DTMF is exact).
DTMF_TRANSFER_DIGIT = env("DTMF_TRANSFER_DIGIT", default="0")
DTMF_END_DIGIT = env("DTMF_END_DIGIT", default="#")

# --- Speech and language engines --------------------------------------------------------------
# "auto" picks the real engine when its key is set, the offline one otherwise.
STT_ENGINE = env("STT_ENGINE", default="auto")  # auto | deepgram | offline
LLM_ENGINE = env("LLM_ENGINE", default="auto")  # auto | groq | scripted
TTS_ENGINE = env("TTS_ENGINE", default="auto")  # auto | deepgram | offline
DEEPGRAM_API_KEY = env("DEEPGRAM_API_KEY", default="")
# Base URLs: only tests and fakes change them.
DEEPGRAM_API_URL = env("DEEPGRAM_API_URL", default="https://api.deepgram.com")
DEEPGRAM_WS_URL = env("DEEPGRAM_WS_URL", default="wss://api.deepgram.com")
DEEPGRAM_STT_MODEL = env("DEEPGRAM_STT_MODEL", default="nova-3")
DEEPGRAM_TTS_VOICE = env("DEEPGRAM_TTS_VOICE", default="aura-2-thalia-en")
DEEPGRAM_ENDPOINTING_MS = env.int("DEEPGRAM_ENDPOINTING_MS", default=300)
DEEPGRAM_UTTERANCE_END_MS = env.int("DEEPGRAM_UTTERANCE_END_MS", default=1000)
GROQ_API_KEY = env("GROQ_API_KEY", default="")
GROQ_BASE_URL = env("GROQ_BASE_URL", default="")
GROQ_MODEL = env("GROQ_MODEL", default="llama-3.3-70b-versatile")
GROQ_TIMEOUT_S = env.float("GROQ_TIMEOUT_S", default=10.0)
# From the request to the first text or tool-call delta (retry included), s; then the apology.
GROQ_FIRST_TOKEN_TIMEOUT_S = env.float("GROQ_FIRST_TOKEN_TIMEOUT_S", default=4.0)
# Live STT connection (media_ws/providers/deepgram_stt.py documents each one).
DEEPGRAM_CONNECT_TIMEOUT_S = env.float("DEEPGRAM_CONNECT_TIMEOUT_S", default=5.0)
DEEPGRAM_KEEPALIVE_S = env.float("DEEPGRAM_KEEPALIVE_S", default=3.0)
DEEPGRAM_RECONNECT_ATTEMPTS = env.int("DEEPGRAM_RECONNECT_ATTEMPTS", default=5)
DEEPGRAM_STT_BUFFER_MS = env.int("DEEPGRAM_STT_BUFFER_MS", default=10000)
DEEPGRAM_TTS_TIMEOUT_S = env.float("DEEPGRAM_TTS_TIMEOUT_S", default=5.0)
# After a TTS timeout, outage or refused key, the offline voice speaks for this long (s), then the
# real engine is tried again.
TTS_FAILOVER_COOLDOWN_S = env.float("TTS_FAILOVER_COOLDOWN_S", default=60.0)
# Offline engines (media_ws/providers/offline_tts.py, offline_stt.py, scripted.py).
# espeak-ng voice name ("en-us", "en" for British, "en-gb-x-rp", ...) and speaking rate in words
# per minute (80-450).
OFFLINE_TTS_VOICE = env("OFFLINE_TTS_VOICE", default="en-us")
OFFLINE_TTS_RATE = env.int("OFFLINE_TTS_RATE", default=175)
# pocketsphinx decodes at once per process (each ~0.3-0.45 x real time on one core), caller audio
# kept from before the VAD's speech onset, and the longest utterance decoded in one piece.
OFFLINE_STT_MAX_DECODES = env.int("OFFLINE_STT_MAX_DECODES", default=2)
OFFLINE_STT_PREROLL_MS = env.int("OFFLINE_STT_PREROLL_MS", default=300)
OFFLINE_STT_MAX_UTTERANCE_MS = env.int("OFFLINE_STT_MAX_UTTERANCE_MS", default=30000)
# The scripted agent's pause before its first text delta and between deltas (simulated LLM pace).
OFFLINE_LLM_FIRST_DELTA_MS = env.float("OFFLINE_LLM_FIRST_DELTA_MS", default=0.0)
OFFLINE_LLM_DELTA_MS = env.float("OFFLINE_LLM_DELTA_MS", default=0.0)

# --- Barge-in detector (media_ws/vad.py documents each one) -----------------------------------
# Defaults chosen by measurement on real speech and the noise lab (`python -m lab.tune_vad`).
BARGE_IN = {
    # webrtcvad aggressiveness 0..3; the noise gate below does the rejecting, so 0 (keeps most speech).
    "VAD_MODE": env.int("BARGE_IN_VAD_MODE", default=0),
    # Onset: ONSET_FRAMES 20 ms frames above RISE_SNR_DB ...
    "ONSET_FRAMES": env.int("BARGE_IN_ONSET_FRAMES", default=2),
    # ... within ONSET_WINDOW_FRAMES consecutive frames ...
    "ONSET_WINDOW_FRAMES": env.int("BARGE_IN_ONSET_WINDOW_FRAMES", default=3),
    # ... of which ONSET_VOICED_FRAMES (incl. the deciding frame) webrtcvad calls speech above MIN_SNR_DB.
    "ONSET_VOICED_FRAMES": env.int("BARGE_IN_ONSET_VOICED_FRAMES", default=1),
    # dB a voiced frame must be above the adaptive noise floor.
    "MIN_SNR_DB": env.float("BARGE_IN_MIN_SNR_DB", default=6.0),
    # dBFS a voiced frame must reach regardless of the floor.
    "MIN_LEVEL_DBFS": env.float("BARGE_IN_MIN_LEVEL_DBFS", default=-45.0),
    # dB above the floor for a frame to count toward ONSET_FRAMES without webrtcvad (soft word starts).
    "RISE_SNR_DB": env.float("BARGE_IN_RISE_SNR_DB", default=4.0),
    # ms without voiced frames that ends a speech segment (utterance end for the offline STT).
    "END_SILENCE_MS": env.int("BARGE_IN_END_SILENCE_MS", default=500),
    # ms of audio whose quietest frame is the noise floor.
    "NOISE_FLOOR_WINDOW_MS": env.int("BARGE_IN_NOISE_FLOOR_WINDOW_MS", default=1500),
    # A frame whose loudest 2 ms holds more than this share of its energy above the noise is a click
    # (1.0 = off).
    "CLICK_ENERGY_RATIO": env.float("BARGE_IN_CLICK_ENERGY_RATIO", default=0.85),
    # A frame whose strongest DTMF tone pair holds more than this share of its energy is a keypress
    # (1.0 = off).
    "TONE_ENERGY_RATIO": env.float("BARGE_IN_TONE_ENERGY_RATIO", default=0.8),
}

# --- Benchmarks -------------------------------------------------------------------------------
# Per-frame handling delay of the media stream, for bench.calls_per_process: when set, each call
# appends its samples to this file when it ends (media_ws/frame_timing.py). Empty = off.
MEDIA_FRAME_TIMING_FILE = env("MEDIA_FRAME_TIMING_FILE", default="")

# --- Logging: never the audio payloads or secrets ---------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # One handler, on the root: Daphne's command line installs a root handler of its own, and a
    # second one on our loggers printed every line twice.
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "calls": {"level": env("LOG_LEVEL", default="INFO")},
        "media_ws": {"level": env("LOG_LEVEL", default="INFO")},
        "daphne": {"level": "INFO"},
        "httpx": {"level": "WARNING"},  # one INFO line per TTS or LLM request otherwise
    },
}
