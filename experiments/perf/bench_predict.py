"""`crossmodal predict` on a folder of 100 clips: clips/s, and what the speech check (Silero VAD) costs.

    .venv/bin/python experiments/perf/bench_predict.py [--clips 100] [--repeats 5] [--ckpt STUDENT] [--json out.json]

The clips are real speech: the first ``--clips`` EmoDB utterances the package ships
(crossmodal/assets/demo/emodb/wav, 16 kHz FLAC, 1.2-8 s, mean about 2.7 s), copied into one folder.
The student is ``--ckpt``, else the shipped default. In one process, three variants alternate
(A B C, C B A, ...) ``--repeats`` times after one untimed warm-up pass, and medians are reported:

- ``vad``: ``predict_files(student, [folder])`` as `crossmodal predict FOLDER` runs it (default windows
  4 s every 2 s, the speech check on);
- ``no_vad``: the same with ``speech=None`` (what predict cost before the check);
- ``vad_alone``: only the detector, :func:`crossmodal.io.vad.frame_probabilities`, over the same clips
  decoded beforehand (its share of a ``vad`` run).

Then the command itself, end to end in a fresh process (`crossmodal predict FOLDER --json`: Python
start-up, imports and loading the student and the detector included), ``--repeats`` times.
Goal (issue 22, goal 5): at least 30 clips/s on 2 cores, the speech check included.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DEMO = REPO / "crossmodal" / "assets" / "demo" / "emodb" / "wav"
TARGET = 30.0


def load_now() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ckpt", default=None, help="student file (default: the shipped one)")
    parser.add_argument("--work-dir", default=None, help="where the folder of clips is made (default: a temporary folder)")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end command runs")
    parser.add_argument("--package-loop", type=int, default=20, metavar="N",
                        help="also time the silero-vad package's own frame loop against ours on the first N clips (0: skip)")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)

    import torch

    from crossmodal.inference import load_student
    from crossmodal.io import vad
    from crossmodal.io.audio import load_audio
    from crossmodal.tasks.predict import predict_files

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_predict_"))
    folder = work / f"clips{args.clips}"
    sources = sorted(DEMO.glob("*.flac"))[: args.clips]
    if len(sources) < args.clips:
        raise SystemExit(f"only {len(sources)} demo clips in {DEMO}, {args.clips} asked")
    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        if not (folder / source.name).exists():
            shutil.copy(source, folder / source.name)
    student = load_student(args.ckpt)
    waves = [load_audio(path) for path in sorted(folder.glob("*.flac"))]
    seconds = sum(len(w) for w in waves) / 16000

    def run_predict(speech) -> float:
        start = time.perf_counter()
        result = predict_files(student, [folder], speech=speech)
        elapsed = time.perf_counter() - start
        if result.errors or len(result.results) != args.clips:
            raise SystemExit(f"predict refused {len(result.errors)} clips: {result.errors[:2]}")
        return elapsed

    def run_vad_alone() -> float:
        start = time.perf_counter()
        for wave in waves:
            vad.frame_probabilities(wave, 16000)
        return time.perf_counter() - start

    variants = {"vad": lambda: run_predict(vad.DEFAULT_CHECK), "no_vad": lambda: run_predict(None), "vad_alone": run_vad_alone}
    for variant in variants.values():  # warm-up: first allocations, the detector's load
        variant()
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(args.repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            times[name].append(variants[name]())
    med = {name: statistics.median(values) for name, values in times.items()}
    rate = {name: args.clips / med[name] for name in ("vad", "no_vad")}
    share_alone = med["vad_alone"] / med["vad"]
    share_diff = statistics.median((a - b) / a for a, b in zip(times["vad"], times["no_vad"]))
    print(f"clips: {args.clips} demo EmoDB clips, {seconds:.0f} s of audio; torch threads {torch.get_num_threads()}; "
          f"silero-vad {vad.package_version()}; student {student.info.get('path', '')}")
    print(f"predict, speech check on : {rate['vad']:6.1f} clips/s (median {med['vad']:.2f} s of {args.repeats}), target >= {TARGET:g}")
    print(f"predict, speech check off: {rate['no_vad']:6.1f} clips/s (median {med['no_vad']:.2f} s)")
    print(f"the detector alone: {med['vad_alone']:.2f} s ({1000 * med['vad_alone'] / seconds:.1f} ms per second of audio), "
          f"{100 * share_alone:.0f} % of a checked run; paired difference on/off: {100 * share_diff:.0f} %")
    figures = {"clips": args.clips, "audio_seconds": round(seconds, 1), "repeats": args.repeats, "threads": torch.get_num_threads(),
               "times": times, "clips_per_s": rate, "vad_alone_s": med["vad_alone"], "vad_share_alone": share_alone,
               "vad_share_paired": share_diff}
    if args.package_loop:
        import warnings

        import silero_vad

        torch.set_num_threads(figures["threads"])  # the package's import sets 1 thread
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            package = silero_vad.load_silero_vad()
        torch.set_num_threads(figures["threads"])
        few = waves[: args.package_loop]

        def package_loop() -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                for wave in few:
                    package.reset_states()
                    package.audio_forward(torch.from_numpy(wave)[None], 16000)
            return time.perf_counter() - start

        def ours() -> float:
            start = time.perf_counter()
            for wave in few:
                vad.frame_probabilities(wave, 16000)
            return time.perf_counter() - start

        loops = {"package": [], "ours": []}
        for round_ in range(args.repeats):
            for name, fn in ((("package", package_loop), ("ours", ours)) if round_ % 2 == 0 else (("ours", ours), ("package", package_loop))):
                loops[name].append(fn())
        few_seconds = sum(len(w) for w in few) / 16000
        ratio = statistics.median(a / b for a, b in zip(loops["package"], loops["ours"]))
        print(f"detector on {len(few)} clips ({few_seconds:.0f} s): the package's frame loop "
              f"{1000 * statistics.median(loops['package']) / few_seconds:.1f} ms per audio second, ours "
              f"{1000 * statistics.median(loops['ours']) / few_seconds:.1f} ms: {ratio:.1f}x (median of paired ratios)")
        figures["package_loop"] = loops
    if not args.no_cli:
        command = [sys.executable, "-m", "crossmodal.cli", "predict", str(folder), "--json", "--no-embedding"]
        if args.ckpt:
            command += ["--ckpt", args.ckpt]
        walls = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CROSSMODAL_NO_PROGRESS": "1"})
            walls.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"crossmodal predict failed ({done.returncode}): {done.stderr[-500:]}")
        wall = statistics.median(walls)
        print(f"`crossmodal predict FOLDER --json` end to end (start-up included): {wall:.2f} s, {args.clips / wall:.1f} clips/s")
        figures["cli_wall_s"] = walls
    print(load_now())
    figures["load"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
