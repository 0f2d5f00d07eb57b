"""The barge-in benchmark's core on a tiny input: real speech, one noise, three detectors.

The full benchmark (``python -m bench.barge_in``) is not part of the test suite; this checks that
its pipeline runs end to end, that the JSON it writes has the documented shape, and the one
comparison the project relies on: on stationary line noise loud enough for webrtcvad to call it
speech, our detector does not barge in and plain webrtcvad does.
"""

from __future__ import annotations

import json

import pytest

from bench import barge_in as B
from bench.common import write_json

TINY = B.Plan(
    sources=("clone_test", "cards_002"),
    passes=1,
    conditions=(("silence", None), ("white", 10.0)),
    noise_signals=(("white", 5.0),),  # white noise at -27 dBFS
    noise_minutes=0.2,
)


@pytest.fixture(scope="module")
def data() -> dict:
    configs = [c for c in B.default_configs() if c.name in ("webrtcvad m3 3x20ms", "ours (defaults)")]
    configs.append(next(c for c in B.default_configs() if c.name == "silero p≥0.5 for 200 ms"))
    return B.benchmark(TINY, configs, quick=True, log=lambda _: None)


def test_json_has_the_documented_shape(data: dict, tmp_path) -> None:
    write_json(tmp_path / "barge_in.json", data)
    back = json.loads((tmp_path / "barge_in.json").read_text())
    assert back["benchmark"] == "barge_in"
    assert {"cpu", "cores", "ram_gib", "python", "packages"} <= set(back["machine"])
    assert back["machine"]["packages"]["webrtcvad-wheels"]
    res = back["results"]
    assert res["onsets_per_condition"] == 2
    assert set(res["per_config"]) == {"webrtcvad m3 3x20ms", "ours (defaults)", "silero p≥0.5 for 200 ms"}
    for r in res["per_config"].values():
        assert set(r["conditions"]) == {"digital silence", "white 10 dB"}
        assert set(r["by_snr"]) == {"digital silence", "10 dB"}
        o = r["overall"]
        assert o["onsets"] == 4 and o["hits"] + o["missed"] == 4
        assert set(o["latency_ms"]) == {"p50", "p95", "max", "min"}
        assert set(r["noise"]) == {"white -27 dBFS"}
        assert r["noise"]["white -27 dBFS"]["minutes"] == pytest.approx(0.2, abs=0.01)
        assert r["cpu_us_per_frame"] > 0
    assert "| ours (defaults) |" in B.summary_table(res)


def test_every_detector_hears_clean_real_speech(data: dict) -> None:
    for name, r in data["results"]["per_config"].items():
        clean = r["conditions"]["digital silence"]
        assert clean["missed"] == 0, name
        lat = clean["latency_ms"]
        assert -B.S.PRE_ROLL_MS <= lat["min"] <= lat["max"] <= B.WINDOW_MS, name


def test_ours_does_not_barge_in_on_line_noise_where_plain_webrtcvad_does(data: dict) -> None:
    per = data["results"]["per_config"]
    ours = per["ours (defaults)"]
    plain = per["webrtcvad m3 3x20ms"]
    assert ours["noise"]["white -27 dBFS"]["false_barge_ins"] == 0
    assert plain["noise"]["white -27 dBFS"]["false_barge_ins"] >= 1
    # Plain webrtcvad calls the noise speech and stays in its segment; ours never enters one.
    assert plain["noise"]["white -27 dBFS"]["in_speech_pct"] > 90
    assert ours["noise"]["white -27 dBFS"]["in_speech_pct"] == 0
    # Under the same noise at 10 dB SNR ours still hears both onsets.
    assert ours["conditions"]["white 10 dB"]["missed"] == 0
