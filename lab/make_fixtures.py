"""Rebuild the committed caller-audio fixtures from the original recordings.

    python -m lab.make_fixtures <folder with beckett.wav and clone-test.wav>

Writes ``tests/fixtures/audio/<name>.ulaw``: raw G.711 μ-law, 8 kHz mono, no header, band-limited
to 300–3400 Hz and set to an active speech level of -22 dBFS (see ``lab.telephone``). The
recordings are from the MIT-licensed ``moonshine-voice`` 0.1.5 package (its ``assets/`` folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lab.telephone import read_wav, to_phone_line

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "audio"
SOURCES = {"beckett": "beckett.wav", "clone_test": "clone-test.wav"}


def main(source_dir: str) -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, filename in SOURCES.items():
        x, rate = read_wav(Path(source_dir) / filename)
        ulaw = to_phone_line(x, rate)
        (FIXTURES / f"{name}.ulaw").write_bytes(ulaw)
        print(f"{name}.ulaw: {len(ulaw)} bytes, {len(ulaw) / 8000:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1])
