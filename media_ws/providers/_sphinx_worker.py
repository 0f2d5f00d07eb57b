"""The pocketsphinx decoder, run inside a worker process (see ``offline_stt.DecoderPool``).

Kept free of Django so a spawned worker imports only pocketsphinx and the audio helpers.
"""

from __future__ import annotations

from typing import Any

from media_ws.audio import SAMPLE_RATE, resample_pcm16, ulaw_to_pcm16

#: The model's sample rate (pocketsphinx/model/en-us is a 16 kHz model).
MODEL_RATE = 16000

_decoder: Any = None


def _build() -> Any:
    from pocketsphinx import Decoder

    # dither: telephone audio upsampled to 16 kHz has no energy above 4 kHz, so the model's upper
    # mel filters (up to 6800 Hz) see digital silence; pocketsphinx's 1/2-bit dither keeps their log
    # energies finite. On a 44 s phone-band reading (not a test fixture) it raised word accuracy
    # from 0.18 to 0.24. Deterministic: reinit_feat() reseeds it.
    return Decoder(loglevel="FATAL", dither=True)


def warm_up() -> bool:
    """Build this worker's decoder (about 0.3-0.7 s and 91 MiB, once per worker)."""
    global _decoder
    if _decoder is None:
        _decoder = _build()
    return True


def decode(ulaw: bytes) -> str:
    """Recognise one utterance of μ-law 8 kHz audio; returns its words ("" for none)."""
    global _decoder
    warm_up()
    pcm = resample_pcm16(ulaw_to_pcm16(ulaw), SAMPLE_RATE, MODEL_RATE)
    decoder = _decoder
    try:
        # Every decode starts from the same feature state: otherwise the words found depend on
        # what this decoder heard before.
        decoder.reinit_feat()
        decoder.start_utt()
        try:
            # One call with full_utt=True: the cepstral mean is then taken over this whole
            # utterance. Fed in pieces, the live mean starts from the model's default and adapts
            # too slowly for short phone utterances (measured: nearly every word wrong).
            decoder.process_raw(pcm, full_utt=True)
        finally:
            decoder.end_utt()
        hyp = decoder.hyp()
    except Exception:
        _decoder = None  # its state is unknown after a failure: the next decode builds another
        raise
    return hyp.hypstr.strip() if hyp is not None else ""
