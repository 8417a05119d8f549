"""Which voice-activity detector crossmodal uses: Silero VAD against webrtcvad on our own clips.

    .venv/bin/pip install webrtcvad-wheels      # only for this study; crossmodal itself needs silero-vad only
    .venv/bin/python experiments/perf/vad_choice.py [--shared ../shared/data]

Speech: every EmoDB (22.05 kHz in ../shared), GRID (MPEG-1 video, MP2 audio) and VoxCeleb1 clip in
``--shared``, and the demo EmoDB clips the package ships. Non-speech, made here at 8, 16, 22.05 and
44.1 kHz (5 s each): uniform noise (+-0.5), Gaussian noise (sigma 0.5), quiet Gaussian noise (sigma
0.01), pink noise, sines at 150 Hz, 440 Hz and 1 kHz, a chirp (100-2100 Hz), a 200 Hz square wave,
mains hum (50 + 150 Hz), a DC offset of 0.5 and digital silence. Everything is brought to 16 kHz by
crossmodal's own reader/resampler. Per clip: the share of frames called voiced (Silero: 32-ms frames
at probability >= 0.5, crossmodal.io.vad; webrtcvad: 30-ms frames, aggressiveness 0-3). Printed: for
speech the least-voiced clip, the 5th percentile and the median; for each non-speech signal its voiced
share per detector; and each detector's cost per second of audio (one process, the same clips).
"""
from __future__ import annotations

import argparse
import importlib
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def signals(rate: int, seconds: float = 5.0, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    white = rng.normal(0, 1, n)
    spectrum, freqs = np.fft.rfft(white), np.fft.rfftfreq(n, 1 / rate)
    freqs[0] = 1.0
    pink = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    out = {
        "uniform noise": rng.uniform(-0.5, 0.5, n),
        "gaussian noise": np.clip(rng.normal(0, 0.5, n), -1, 1),
        "quiet noise": rng.normal(0, 0.01, n),
        "pink noise": 0.3 * pink / pink.std(),
        "sine 150 Hz": 0.5 * np.sin(2 * np.pi * 150 * t),
        "sine 440 Hz": 0.5 * np.sin(2 * np.pi * 440 * t),
        "sine 1 kHz": 0.5 * np.sin(2 * np.pi * 1000 * t),
        "chirp": 0.5 * np.sin(2 * np.pi * (100 * t + 200 * t * t)),
        "square 200 Hz": 0.3 * np.sign(np.sin(2 * np.pi * 200 * t)),
        "hum": 0.3 * np.sin(2 * np.pi * 50 * t) + 0.1 * np.sin(2 * np.pi * 150 * t),
        "dc offset": np.full(n, 0.5),
        "silence": np.zeros(n),
    }
    return {name: wave.astype(np.float32) for name, wave in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", default=os.environ.get("CROSSMODAL_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    args = parser.parse_args()

    from crossmodal.io import vad
    from crossmodal.io.audio import load_audio, resample

    try:
        webrtcvad = importlib.import_module("webrtcvad")  # not a dependency of crossmodal: installed for this study only
    except ImportError:
        webrtcvad = None
        print("webrtcvad not installed (pip install webrtcvad-wheels): Silero only")

    def webrtc(wave: np.ndarray, mode: int) -> float:
        detector = webrtcvad.Vad(mode)
        pcm = (np.clip(wave, -1, 1) * 32767).astype("<i2")
        frames = [pcm[i : i + 480].tobytes() for i in range(0, len(pcm) - 479, 480)]
        return float(np.mean([detector.is_speech(f, 16000) for f in frames])) if frames else 0.0

    shared = Path(args.shared)
    corpora = {
        "EmoDB": sorted((shared / "emodb" / "wav").glob("*.wav")),
        "GRID": sorted((shared / "grid").glob("*.mpg")),
        "VoxCeleb1": sorted((shared / "voxceleb1").glob("testfiles/*/*.wav")),
        "demo EmoDB": sorted((REPO / "crossmodal" / "assets" / "demo" / "emodb" / "wav").glob("*.flac")),
    }
    cost = {"silero": 0.0, "webrtc": 0.0}
    audio_seconds = 0.0
    print("speech: voiced share of frames, least / 5th percentile / median (least-voiced clip)")
    for corpus, files in corpora.items():
        if not files:
            print(f"  {corpus}: no clips under {shared}")
            continue
        rows = []
        for path in files:
            wave = load_audio(path)
            audio_seconds += len(wave) / 16000
            start = time.perf_counter()
            silero = vad.voiced_fraction(wave, 16000)
            cost["silero"] += time.perf_counter() - start
            start = time.perf_counter()
            modes = [webrtc(wave, mode) for mode in range(4)] if webrtcvad else []
            cost["webrtc"] += (time.perf_counter() - start) / 4
            rows.append((path.name, silero, modes))
        silero = np.array([r[1] for r in rows])
        worst = rows[int(np.argmin(silero))][0]
        line = f"  {corpus} ({len(rows)}): silero {silero.min():.3f} / {np.percentile(silero, 5):.3f} / {np.median(silero):.3f} ({worst})"
        for mode in range(4 if webrtcvad else 0):
            values = np.array([r[2][mode] for r in rows])
            line += f"; webrtc mode {mode} {values.min():.3f} / {np.median(values):.3f}"
        print(line)
    print("non-speech: voiced share of frames, silero | webrtcvad modes 0 1 2 3")
    for rate in (8000, 16000, 22050, 44100):
        for name, wave in signals(rate).items():
            wave16 = resample(wave, rate, 16000)
            probabilities = vad.frame_probabilities(wave16, 16000)
            modes = " ".join(f"{webrtc(wave16, m):.2f}" for m in range(4)) if webrtcvad else "-"
            print(f"  {rate:>5} Hz {name:>14}: silero {vad.DEFAULT_CHECK.fraction(probabilities):.3f} "
                  f"(highest frame {probabilities.max():.3f}) | {modes}")
    print(f"cost per second of audio over {audio_seconds:.0f} s: silero (crossmodal.io.vad) {1000 * cost['silero'] / audio_seconds:.2f} ms, "
          f"webrtcvad {1000 * cost['webrtc'] / audio_seconds:.3f} ms; load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
