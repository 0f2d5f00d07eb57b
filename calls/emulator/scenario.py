"""Scripted callers: what the emulated person who answers the phone does, and when.

A scenario is a TOML file (stdlib ``tomllib``). The built-in ones are in
``calls/emulator/scenarios/``; more can be added with ``EMULATOR_SCENARIO_DIRS``. Example::

    description = "Barges in on the greeting, then says goodbye and presses #."
    number = "+15005550100"     # optional: calling this number reaches this callee
    max_duration_s = 90         # optional: the callee hangs up after this long (default 120)

    [[steps]]
    after_bot_starts_ms = 1200  # 1.2 s into the bot's next speech ...
    say = "clone_test"          # ... say this recording (calls/emulator/recordings/clone_test.ulaw)
    from_ms = 400               # optional clip of the recording, ms
    to_ms = 4109

    [[steps]]
    after_bot_stops_ms = 600    # 0.6 s after the bot's next speech has ended ...
    dtmf = "#"                  # ... press the pound key

Each step has at most one **trigger** (when the step starts):

* ``at_ms = T``: when the call clock (ms since the media stream started) reaches ``T``;
* ``after_bot_starts_ms = N``: ``N`` ms into the bot's next speech (the speech playing when the
  step comes up, else the next one to start) — the way to barge in;
* ``after_bot_stops_ms = N``: once the bot's next speech has ended and the bot has then been
  silent for ``N`` ms (a pause shorter than ``N`` does not count as the end);
* none: right after the previous step has finished.

and exactly one **action**:

* ``say = "<recording>"``, optionally clipped with ``from_ms`` / ``to_ms``: the caller speaks
  that recording; the step finishes when its last frame has been sent;
* ``silence_ms = N``: the caller stays quiet for ``N`` ms;
* ``dtmf = "<digits>"``: key presses (``0-9 * #``), sent as Twilio ``dtmf`` events 200 ms apart;
* ``hangup = true``: the caller hangs up (Twilio sends ``stop`` and closes the stream).

``timeout_ms`` (default 60000) bounds how long a step waits for its trigger; when it passes, the
callee gives up and hangs up, and the result says which step timed out. ``note`` is a free-text
label shown in logs. After the last step the callee stays on the line, silent, until the bot ends
the call or ``max_duration_s`` passes.

Recordings are raw μ-law 8 kHz files (``<name>.ulaw``) or mono 16-bit WAV files (``<name>.wav``,
any sample rate, resampled to 8 kHz), looked up first in a ``recordings/`` folder inside the
scenario file's folder, then in ``calls/emulator/recordings/``.

Errors in a file raise ``ScenarioError`` naming the file, the step (1-based) and the field.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tomllib
import wave
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from calls.emulator.stream import EmulatedMediaStream
from media_ws.audio import BYTES_PER_MS, SAMPLE_RATE, pcm16_to_ulaw, resample_pcm16

logger = logging.getLogger(__name__)

EMULATOR_DIR = Path(__file__).resolve().parent
BUILTIN_SCENARIOS = EMULATOR_DIR / "scenarios"
BUILTIN_RECORDINGS = EMULATOR_DIR / "recordings"

TRIGGERS = ("at_ms", "after_bot_starts_ms", "after_bot_stops_ms")
ACTIONS = ("say", "silence_ms", "dtmf", "hangup")
STEP_KEYS = frozenset({*TRIGGERS, *ACTIONS, "from_ms", "to_ms", "timeout_ms", "note"})
TOP_KEYS = frozenset({"description", "number", "max_duration_s", "steps"})
DTMF_DIGITS = frozenset("0123456789*#")
#: Call-clock spacing of the key presses of one ``dtmf`` step (a press and its pause on a keypad).
DTMF_SPACING_MS = 200
DEFAULT_STEP_TIMEOUT_MS = 60_000
DEFAULT_MAX_DURATION_S = 120.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ScenarioError(ValueError):
    """A scenario file or name is invalid; the message names the file, step and field."""


@dataclass(frozen=True)
class Step:
    """One step of a scenario (see the module docstring). Times in ms."""

    index: int  # 1-based, as in error messages
    trigger: str | None  # one of TRIGGERS, or None: right after the previous step
    trigger_ms: int
    action: str  # one of ACTIONS
    audio: bytes = b""  # μ-law 8 kHz, already clipped (``say``)
    recording: str = ""  # the recording's name (``say``)
    clip: tuple[int, int] = (0, 0)  # (from_ms, to_ms) of the recording (``say``)
    silence_ms: int = 0
    digits: str = ""
    timeout_ms: int = DEFAULT_STEP_TIMEOUT_MS
    note: str = ""

    def describe(self) -> str:
        """A one-line description, e.g. ``"step 1: 1200 ms into the bot's speech, say clone_test"``."""
        when = {
            None: "next",
            "at_ms": f"at {self.trigger_ms} ms",
            "after_bot_starts_ms": f"{self.trigger_ms} ms into the bot's speech",
            "after_bot_stops_ms": f"{self.trigger_ms} ms after the bot stops",
        }[self.trigger]
        what = {
            "say": f"say {self.recording} [{self.clip[0]}-{self.clip[1]} ms]",
            "silence_ms": f"stay silent {self.silence_ms} ms",
            "dtmf": f"press {self.digits}",
            "hangup": "hang up",
        }[self.action]
        return f"step {self.index}: {when}, {what}" + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class Scenario:
    """A parsed, validated scenario: a callee's script."""

    name: str
    path: Path
    description: str = ""
    number: str = ""
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    steps: tuple[Step, ...] = ()


# ---- finding and loading ----------------------------------------------------------------------


def scenario_dirs() -> list[Path]:
    """Where scenarios are looked up, in order: ``EMULATOR_SCENARIO_DIRS``, then the built-in ones."""
    extra = [Path(d) for d in getattr(settings, "EMULATOR_SCENARIO_DIRS", []) if str(d).strip()]
    return [*extra, BUILTIN_SCENARIOS]


def available_scenarios() -> list[str]:
    """Names of every scenario file found (``<name>.toml``), sorted, first directory winning."""
    names: set[str] = set()
    for folder in scenario_dirs():
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.toml"))
    return sorted(names)


def scenario_path(name: str) -> Path:
    """The file of scenario ``name``. Raises ``ScenarioError`` for a bad or unknown name."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ScenarioError(f"{name!r} is not a scenario name (letters, digits, '_', '-', '.')")
    for folder in scenario_dirs():
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
    known = ", ".join(available_scenarios()) or "none"
    raise ScenarioError(f"unknown scenario {name!r}; available: {known}")


def load_scenario(name: str) -> Scenario:
    """Find, read and validate scenario ``name``. Raises ``ScenarioError``."""
    return parse_scenario_file(scenario_path(name))


def scenario_for_number(number: str) -> str | None:
    """The name of the scenario whose ``number`` is ``number`` (E.164), if any.

    Scenario files that fail to parse are skipped here (they fail loudly when chosen by name).
    """
    for name in available_scenarios():
        try:
            path = scenario_path(name)
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError, ScenarioError):
            continue
        if str(data.get("number", "")).strip() == number:
            return name
    return None


def parse_scenario_file(path: Path) -> Scenario:
    """Read and validate one scenario file. Raises ``ScenarioError`` ("<file>: step 2: to_ms: …")."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
    return parse_scenario(data, path=path)


def parse_scenario(data: dict[str, Any], *, path: Path, name: str | None = None) -> Scenario:
    """Validate a scenario already read from TOML (a dict). ``path`` names it in errors and locates
    its recordings. Raises ``ScenarioError``."""
    where = str(path)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ScenarioError(f"{where}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(TOP_KEYS))})")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ScenarioError(f"{where}: description: must be a string")
    number = data.get("number", "")
    if not isinstance(number, str):
        raise ScenarioError(f"{where}: number: must be a string in E.164, e.g. \"+15005550100\"")
    if number:
        from calls.errors import InvalidPhoneNumber
        from calls.phone import parse_e164

        try:
            number = parse_e164(number)
        except InvalidPhoneNumber as exc:
            raise ScenarioError(f"{where}: number: {exc}") from exc
    max_duration = data.get("max_duration_s", DEFAULT_MAX_DURATION_S)
    number_like = isinstance(max_duration, int | float) and not isinstance(max_duration, bool)
    if not number_like or not 1 <= max_duration <= 3600:
        raise ScenarioError(f"{where}: max_duration_s: must be a number of seconds from 1 to 3600")
    raw_steps = data.get("steps", [])
    if not isinstance(raw_steps, list) or not all(isinstance(s, dict) for s in raw_steps):
        raise ScenarioError(f"{where}: steps: must be an array of tables ([[steps]])")
    recordings = _RecordingCache(_recording_dirs(path))
    steps = tuple(_parse_step(raw, i, where, recordings) for i, raw in enumerate(raw_steps, start=1))
    return Scenario(
        name=name or path.stem,
        path=path,
        description=description.strip(),
        number=number,
        max_duration_s=float(max_duration),
        steps=steps,
    )


def _parse_step(raw: dict[str, Any], index: int, where: str, recordings: _RecordingCache) -> Step:
    at = f"{where}: step {index}"
    unknown = sorted(set(raw) - STEP_KEYS)
    if unknown:
        raise ScenarioError(f"{at}: unknown field {unknown[0]!r} (allowed: {', '.join(sorted(STEP_KEYS))})")
    triggers = [k for k in TRIGGERS if k in raw]
    if len(triggers) > 1:
        raise ScenarioError(f"{at}: {triggers[1]}: a step has at most one trigger, and {triggers[0]} is set")
    trigger = triggers[0] if triggers else None
    trigger_ms = _ms(raw, trigger, at) if trigger else 0
    actions = [k for k in ACTIONS if k in raw]
    if not actions:
        raise ScenarioError(f"{at}: needs an action: one of {', '.join(ACTIONS)}")
    if len(actions) > 1:
        raise ScenarioError(f"{at}: {actions[1]}: a step has one action, and {actions[0]} is set")
    action = actions[0]
    timeout_ms = _ms(raw, "timeout_ms", at) if "timeout_ms" in raw else DEFAULT_STEP_TIMEOUT_MS
    if timeout_ms < 1:
        raise ScenarioError(f"{at}: timeout_ms: must be at least 1")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise ScenarioError(f"{at}: note: must be a string")
    if action != "say":
        for key in ("from_ms", "to_ms"):
            if key in raw:
                raise ScenarioError(f"{at}: {key}: only a 'say' step has a clip")
    step = Step(index=index, trigger=trigger, trigger_ms=trigger_ms, action=action, timeout_ms=timeout_ms,
                note=note)
    if action == "say":
        name = raw["say"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise ScenarioError(f"{at}: say: must be a recording name, e.g. \"clone_test\"")
        try:
            audio = recordings.get(name)
        except ScenarioError as exc:
            raise ScenarioError(f"{at}: say: {exc}") from exc
        length_ms = len(audio) // BYTES_PER_MS
        start = _ms(raw, "from_ms", at) if "from_ms" in raw else 0
        end = _ms(raw, "to_ms", at) if "to_ms" in raw else length_ms
        if end > length_ms:
            raise ScenarioError(f"{at}: to_ms: {end} is past the end of {name!r} ({length_ms} ms)")
        if start >= end:
            raise ScenarioError(f"{at}: from_ms: {start} must be before to_ms ({end})")
        clip = audio[start * BYTES_PER_MS : end * BYTES_PER_MS]
        return _replace(step, audio=clip, recording=name, clip=(start, end))
    if action == "silence_ms":
        return _replace(step, silence_ms=_ms(raw, "silence_ms", at))
    if action == "dtmf":
        digits = raw["dtmf"]
        if isinstance(digits, int) and not isinstance(digits, bool):
            digits = str(digits)
        if not isinstance(digits, str) or not digits or not set(digits) <= DTMF_DIGITS:
            raise ScenarioError(f"{at}: dtmf: must be a string of keypad digits 0-9, * and #, e.g. \"0\"")
        return _replace(step, digits=digits)
    if raw["hangup"] is not True:
        raise ScenarioError(f"{at}: hangup: must be true")
    return step


def _replace(step: Step, **changes: Any) -> Step:
    from dataclasses import replace

    return replace(step, **changes)


def _ms(raw: dict[str, Any], key: str, at: str) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScenarioError(f"{at}: {key}: must be a whole number of ms >= 0, got {value!r}")
    return value


# ---- recordings -------------------------------------------------------------------------------


def _recording_dirs(scenario_file: Path) -> list[Path]:
    return [scenario_file.parent / "recordings", BUILTIN_RECORDINGS]


def available_recordings(dirs: Iterable[Path] = (BUILTIN_RECORDINGS,)) -> list[str]:
    """Names of the recordings in ``dirs`` (``.ulaw`` and ``.wav`` files)."""
    names: set[str] = set()
    for folder in dirs:
        if folder.is_dir():
            names.update(p.stem for p in folder.iterdir() if p.suffix in (".ulaw", ".wav"))
    return sorted(names)


def read_recording(path: Path) -> bytes:
    """A recording as μ-law 8 kHz bytes: ``.ulaw`` files as they are, ``.wav`` (mono 16-bit PCM,
    any rate) resampled to 8 kHz and encoded. Raises ``ScenarioError``."""
    try:
        if path.suffix == ".ulaw":
            return path.read_bytes()
        with wave.open(str(path), "rb") as w:
            if w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise ScenarioError(f"{path}: a WAV recording must be mono 16-bit PCM")
            rate = w.getframerate()
            pcm = w.readframes(w.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise ScenarioError(f"{path}: cannot be read: {exc}") from exc
    return pcm16_to_ulaw(resample_pcm16(pcm, rate, SAMPLE_RATE))


@dataclass
class _RecordingCache:
    dirs: list[Path]
    loaded: dict[str, bytes] = field(default_factory=dict)

    def get(self, name: str) -> bytes:
        if name not in self.loaded:
            for folder in self.dirs:
                for suffix in (".ulaw", ".wav"):
                    path = folder / f"{name}{suffix}"
                    if path.is_file():
                        self.loaded[name] = read_recording(path)
                        break
                if name in self.loaded:
                    break
            else:
                known = ", ".join(available_recordings(self.dirs)) or "none"
                raise ScenarioError(f"no recording named {name!r} (available: {known})")
        return self.loaded[name]


# ---- running ----------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    """What the callee did: ``log`` lines ``(call-clock ms, text)``, the steps finished, and why it
    stopped early (``error``: a step timed out), if it did."""

    steps_done: int = 0
    log: list[tuple[int, str]] = field(default_factory=list)
    error: str = ""
    hung_up: bool = False


class _StreamClosed(Exception):
    pass


async def run_scenario(
    scenario: Scenario, stream: EmulatedMediaStream, result: ScenarioResult | None = None
) -> ScenarioResult:
    """Play ``scenario`` as the caller on ``stream`` (already running). Returns when the steps are
    done (the callee then stays on the line), when the callee hung up, or when the stream closed.

    Progress goes into ``result`` (a new one by default) as it happens, so it survives the task
    being cancelled. A step whose trigger does not come within its ``timeout_ms`` ends the script:
    the callee hangs up and ``ScenarioResult.error`` names the step. Never raises for the bot's
    behaviour.
    """
    result = result if result is not None else ScenarioResult()

    def note(text: str) -> None:
        result.log.append((stream.clock_ms, text))
        logger.info("callee %s at %d ms: %s", stream.call_sid, stream.clock_ms, text)

    for step in scenario.steps:
        if stream.closed.is_set():
            break
        try:
            await _until_closed(stream, _trigger(step, stream), step.timeout_ms / 1000 / stream.speed)
        except TimeoutError:
            result.error = f"{step.describe()}: its trigger did not come within {step.timeout_ms} ms"
            note(f"giving up: {result.error}")
            await stream.hang_up()
            result.hung_up = True
            return result
        except _StreamClosed:
            break
        note(step.describe())
        try:
            await _until_closed(stream, _act(step, stream), None)
        except _StreamClosed:
            break
        result.steps_done += 1
        if step.action == "hangup":
            result.hung_up = True
            break
    return result


async def _until_closed(stream: EmulatedMediaStream, coro: Any, timeout_s: float | None) -> None:
    """Await ``coro`` unless the stream closes first (``_StreamClosed``) or ``timeout_s`` passes."""
    task = asyncio.ensure_future(coro)
    closed = asyncio.ensure_future(stream.closed.wait())
    try:
        done, _ = await asyncio.wait({task, closed}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closed.cancel()
    if task in done:
        task.result()
        return
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass  # the step is abandoned either way
    if stream.closed.is_set():
        raise _StreamClosed
    raise TimeoutError


async def _trigger(step: Step, stream: EmulatedMediaStream) -> None:
    if step.trigger == "at_ms":
        await stream.wait_clock(step.trigger_ms)
    elif step.trigger == "after_bot_starts_ms":
        started = await stream.wait_bot_speaking(timeout_s=3600)
        await stream.wait_clock(started + step.trigger_ms)
    elif step.trigger == "after_bot_stops_ms":
        if not stream.bot_speaking:
            await stream.wait_bot_speaking(timeout_s=3600)
        await stream.wait_bot_silent(for_ms=step.trigger_ms, timeout_s=3600)


async def _act(step: Step, stream: EmulatedMediaStream) -> None:
    if step.action == "say":
        await stream.say(step.audio)
    elif step.action == "silence_ms":
        await stream.wait_clock(stream.clock_ms + step.silence_ms)
    elif step.action == "dtmf":
        for i, digit in enumerate(step.digits):
            if i:
                await stream.wait_clock(stream.clock_ms + DTMF_SPACING_MS)
            await stream.press(digit)
    elif step.action == "hangup":
        await stream.hang_up()
