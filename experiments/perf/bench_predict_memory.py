"""Peak memory of `crossmodal predict --window 0` on a long file: whole-file read (before) vs streamed.

    .venv/bin/python experiments/perf/bench_predict_memory.py [--minutes 40] [--repeats 2] [--ckpt STUDENT]

The long file is real speech: the shipped EmoDB demo clips (crossmodal/assets/demo/emodb/wav)
concatenated, again and again, to ``--minutes`` (written block by block as 16 kHz 16-bit wav in
``--work-dir``, reused while it has the right length). Each variant runs in a fresh process, the two
alternate (A B, B A, ...), and each reports its peak RSS (``ru_maxrss``) above the RSS it had with
torch imported and the student built, so the figure is what predicting the file costs:

- ``whole``: what `--window 0` did before: ``load_audio`` (the whole file as float32 at 16 kHz) and one
  forward pass of the student over all of it (``Student._predict_batch(wave[None])``).
- ``streamed``: ``Student.predict_file(path, window=None)`` today: blocks of 10 s, the whole-file
  answer pooled over 20-s stretches.

The student is ``--ckpt``, else the shipped default, else (when that does not load) the CPU student's
architecture (conf/student/small_cnn.yaml: small_cnn on 64 log-mel bands) with random weights, which
needs the same memory as the trained one. The script says which it used.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEMO = REPO / "crossmodal" / "assets" / "demo" / "emodb" / "wav"
SAMPLE_RATE = 16000


def make_long_file(path: Path, minutes: float) -> Path:
    """Demo clips end to end until ``minutes`` of audio; written block by block, never held whole."""
    import soundfile as sf

    frames = round(minutes * 60 * SAMPLE_RATE)
    if path.exists() and sf.info(str(path)).frames == frames:
        return path
    clips = sorted(DEMO.glob("*.flac"))
    if not clips:
        raise SystemExit(f"no demo clips in {DEMO}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    written = 0
    with sf.SoundFile(str(tmp), "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16", format="WAV") as out:
        while written < frames:
            for clip in clips:
                wave, rate = sf.read(str(clip), dtype="float32")
                assert rate == SAMPLE_RATE, clip
                wave = wave[: frames - written]
                out.write(wave)
                written += len(wave)
                if written >= frames:
                    break
    tmp.replace(path)
    return path


def build_student(ckpt: str | None):
    from crossmodal.inference import Student, load_student

    try:
        student = load_student(ckpt)
        return student, f"{student.info.get('path', ckpt)} ({student.info.get('net_name', '?')})"
    except Exception as exn:  # noqa: BLE001 - the shipped file may be mid-migration; memory needs only the shape
        if ckpt:
            raise
        import torch
        import yaml

        from crossmodal.models.frontend import build_frontend
        from crossmodal.models.speech import create_student

        conf = yaml.safe_load((REPO / "conf" / "student" / "small_cnn.yaml").read_text())
        frontend = build_frontend(conf["frontend"])
        torch.manual_seed(0)
        net = create_student(conf["student"]["name"], n_freq=frontend.n_freq, **conf["student"]["kwargs"])
        reason = str(exn).splitlines()[0][:120]
        return Student(frontend, net), f"small_cnn from conf/student/small_cnn.yaml, random weights (shipped student did not load: {reason})"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(variant: str, path: str, ckpt: str | None, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    student, described = build_student(ckpt)
    from crossmodal.inference import check_signal
    from crossmodal.io.audio import load_audio

    base = peak_rss_mb()
    start = time.perf_counter()
    if variant == "whole":
        wave = load_audio(path, SAMPLE_RATE, max_seconds=float("inf"))
        check_signal(wave, path)
        prediction = student._predict_batch(wave[None])[0]
        duration = len(wave) / SAMPLE_RATE
    else:
        result = student.predict_file(path, window=None)
        prediction, duration = result.whole, result.duration
    seconds = time.perf_counter() - start
    print(json.dumps({"variant": variant, "base_mb": base, "peak_mb": peak_rss_mb(), "seconds": seconds, "duration": duration,
                      "top": prediction.top, "student": described}))


def run_child(variant: str, path: Path, ckpt: str | None, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--file", str(path), "--threads", str(threads)]
    command += ["--ckpt", ckpt] if ckpt else []
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the times depend on it on a shared box; the memory does not)")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "crossmodal_perf" / "predict_memory"))
    parser.add_argument("--child", choices=("whole", "streamed"), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.file, args.ckpt, args.threads)
        return
    path = make_long_file(Path(args.work_dir) / f"long_{args.minutes:g}min.wav", args.minutes)
    print(f"file: {path} ({args.minutes:g} min of EmoDB demo speech, {path.stat().st_size / 1e6:.0f} MB)")
    runs: dict[str, list[dict]] = {"whole": [], "streamed": []}
    for repeat in range(args.repeats):
        order = ("whole", "streamed") if repeat % 2 == 0 else ("streamed", "whole")
        for variant in order:
            runs[variant].append(run_child(variant, path, args.ckpt, args.threads))
    print(f"student: {runs['streamed'][0]['student']}; {args.threads} torch threads; {args.repeats} runs each, medians")
    figures = {}
    for variant, results in runs.items():
        extra = statistics.median(r["peak_mb"] - r["base_mb"] for r in results)
        figures[variant] = extra
        print(f"{variant:>9}: peak RSS {statistics.median(r['peak_mb'] for r in results):7.0f} MB = "
              f"{statistics.median(r['base_mb'] for r in results):.0f} MB (torch + student) + {extra:7.0f} MB for the file "
              f"({extra / args.minutes:6.1f} MB per minute of audio); {statistics.median(r['seconds'] for r in results):.1f} s; "
              f"top: {results[0]['top']}")
    print(f"P7 predict --window 0 memory: whole {figures['whole']:.0f} MB vs streamed {figures['streamed']:.0f} MB for "
          f"{args.minutes:g} min -> {figures['whole'] / max(figures['streamed'], 1):.1f}x less; load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
