"""Evaluation (issue 22 goal 4): task=evaluate's clip loop and probes before and after, side by side.

    .venv/bin/python experiments/perf/bench_eval.py [--source /work/shared/data/ravdess_dev] [--clips 160] [--rounds 2]

Variants of the feature stage, alternated (A B C, C B A, ...) and reported as medians over ``--rounds``:

  per-clip  the loop of task=evaluate as it was (commit f2d8dfc, copied below): one process, each clip
            decoded, then eGeMAPS, MFCC, the student and its random-init twin, one clip at a time
  batched   crossmodal.tasks.evaluate.extract_features: decode + eGeMAPS + MFCC in ``--workers``
            processes (started afresh each round, as in a new run), the students in batches of clips of
            equal frame counts; the baseline features written to a fresh fingerprinted set
  cached    the same, a second evaluation: eGeMAPS/MFCC read from that set, only decoding in the workers

Then the probe stage on those clips' features (the 6 feature sets x 2 protocols of a full run), fitted
in one process (as before) and in ``--workers`` processes, alternated likewise.

Checks printed with the timings: the largest difference of every feature between per-clip and batched
(students: float rounding only, as the batches hold clips of equal frame counts) and whether the
probe tables from both are identical. The clips are a class-stratified subset (``--clips``, 0 = all) of
the corpus, the students the shipped one and its random-init twin. Prints clips/s, the ratios, the
machine and the load average at the start and the end.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perfkit import load_now, machine  # noqa: E402

WORKERS = max(1, len(os.sched_getaffinity(0)))




def per_clip_features(students, clips, baselines):
    """The per-clip loop of task=evaluate at commit f2d8dfc (extract_features), without its skip handling."""
    from crossmodal.eval.baselines import BASELINE_EXTRACTORS
    from crossmodal.inference import check_signal
    from crossmodal.io.audio import SAMPLE_RATE, load_audio

    extractors = {name: BASELINE_EXTRACTORS[name]() for name in baselines}
    outputs = [{"logits": [], "embedding": []} for _ in students]
    outputs[0].update({name: [] for name in extractors})
    with torch.inference_mode():
        for clip in clips:
            wave = load_audio(clip.path, SAMPLE_RATE)
            check_signal(wave, str(clip.path))
            batch = torch.from_numpy(wave)[None]
            for name, extractor in extractors.items():
                outputs[0][name].append(extractor(wave, SAMPLE_RATE, where=str(clip.path)))
            for student, out in zip(students, outputs):
                logits, embedding = student(batch)
                out["logits"].append(logits[0].float().numpy())
                out["embedding"].append(embedding[0].float().numpy())
    return [{name: np.stack(values) for name, values in out.items()} for out in outputs]


def fresh_workers() -> None:
    """Stop joblib's reusable worker processes: the next parallel stage starts them, as a new run does."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (worker processes count once stopped)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def feature_sets(outputs, names):
    sets = {f"probe_{k}": outputs[0][k] for k in ("logits", "embedding")}
    sets.update({f"random_init_{k}": outputs[1][k] for k in ("logits", "embedding")})
    sets.update({name: outputs[0][name] for name in names})
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="/work/shared/data/ravdess_dev", help="a RAVDESS folder (Actor_XX/03-01-...)")
    parser.add_argument("--corpus", default="ravdess")
    parser.add_argument("--clips", type=int, default=160, help="class-stratified subset of this many clips (0: all)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each variant, order alternated")
    parser.add_argument("--workers", type=int, default=WORKERS)
    args = parser.parse_args()

    os.environ.setdefault("CROSSMODAL_NO_PROGRESS", "1")
    from crossmodal.inference import load_student
    from crossmodal.io.corpora import read_corpus
    from crossmodal.tasks import evaluate as ev

    print(f"machine: {machine()}; {load_now()}")
    started = time.perf_counter()
    clips = ev.subsample(read_corpus(args.corpus, args.source), args.clips or None, seed=0)
    seconds = sum(ev._header_samples(c.path) for c in clips) / 16000
    names = ["egemaps", "mfcc"]
    student = load_student(None)
    students = [student, ev.random_init_student(student, 0)]
    print(f"data: {len(clips)} clips of {args.source} ({seconds:.0f} s of audio, {seconds / len(clips):.2f} s a clip), "
          f"student {student.info.get('net_name')} + random-init twin, baselines {'+'.join(names)}, {args.workers} workers")

    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    runs = {"per-clip": [], "batched": [], "cached": []}
    cpu = {name: [] for name in runs}
    results: dict[str, list] = {}

    def timed_per_clip() -> None:
        t, c = time.perf_counter(), cpu_seconds()
        results["per-clip"] = per_clip_features(students, clips, names)
        runs["per-clip"].append(time.perf_counter() - t)
        cpu["per-clip"].append(cpu_seconds() - c)

    def timed_batched(cached: bool) -> None:
        name = "cached" if cached else "batched"
        data_dir = work / ("cache" if cached else f"fresh{len(runs['batched'])}")
        fresh_workers()
        t, c = time.perf_counter(), cpu_seconds()
        with ev.baseline_feature_set(data_dir, args.corpus, args.source, clips, names) as cache:
            assert cache.reused == cached, f"{name}: the feature set was {'not ' if cached else ''}reused"
            outputs, kept, failures, _ = ev.extract_features(students, clips, False, name, names, cached=cache.rows, workers=args.workers)
            cache.save(clips, kept, outputs[0], names)
        runs[name].append(time.perf_counter() - t)
        fresh_workers()
        cpu[name].append(cpu_seconds() - c)
        assert len(kept) == len(clips), failures[:3]
        results[name] = outputs

    # the set the cached variant reads (built once, untimed)
    with ev.baseline_feature_set(work / "cache", args.corpus, args.source, clips, names) as cache:
        outputs, kept, _, _ = ev.extract_features(students, clips, False, "warm-up", names, workers=args.workers)
        cache.save(clips, kept, outputs[0], names)
    order = [timed_per_clip, lambda: timed_batched(False), lambda: timed_batched(True)]
    for round_ in range(args.rounds):
        for variant in order if round_ % 2 == 0 else order[::-1]:
            variant()

    print("\nfeature stage (decode, eGeMAPS, MFCC, student, random-init twin), median of "
          f"{args.rounds}: " + ", ".join(f"{k} {statistics.median(v):.1f} s" for k, v in runs.items()))
    base = statistics.median(runs["per-clip"])
    for name, times in runs.items():
        t = statistics.median(times)
        print(f"  {name:9s} {len(clips) / t:6.2f} clips/s  {t:7.1f} s   x{base / t:5.2f} vs per-clip   (runs: {', '.join(f'{x:.1f}' for x in times)}; "
              f"CPU {statistics.median(cpu[name]):.1f} s, {1000 * statistics.median(cpu[name]) / len(clips):.0f} ms a clip)")
    for key in results["per-clip"][0]:
        diffs = [float(np.max(np.abs(results["per-clip"][i][key] - results["batched"][i][key]))) for i in range(len(students)) if key in results["per-clip"][i]]
        print(f"  max |per-clip - batched| {key}: " + ", ".join(f"{d:.2e}" for d in diffs)
              + ("  (student, twin)" if len(diffs) > 1 else ""))
    same_cache = all(np.array_equal(results["batched"][0][n], results["cached"][0][n]) for n in names)
    print(f"  cached eGeMAPS/MFCC equal to computed: {same_cache}")

    # probe stage
    from crossmodal.tasks.evaluate import BenchmarkConfig, evaluate_features, table_rows

    bench = BenchmarkConfig(corpus=args.corpus, source=args.source)
    _, class_names = ev.select_classes(clips, bench)
    keep, class_names, folds, _ = ev.fit_classes_to_folds(clips, class_names, bench)
    assert len(keep) == len(clips), "a class too small for the folds: use more --clips"
    bench = BenchmarkConfig(corpus=args.corpus, source=args.source, folds=folds)
    probe_times: dict[str, list[float]] = {"1 process": [], f"{args.workers} processes": []}
    probe_cpu: dict[str, list[float]] = {name: [] for name in probe_times}
    tables = {}

    def timed_probes(workers: int, outputs) -> None:
        label = "1 process" if workers == 1 else f"{args.workers} processes"
        fresh_workers()
        t, c = time.perf_counter(), cpu_seconds()
        report = evaluate_features(clips, class_names, feature_sets(outputs, names), outputs[0]["logits"], bench, args.corpus, workers=workers)
        probe_times[label].append(time.perf_counter() - t)
        fresh_workers()
        probe_cpu[label].append(cpu_seconds() - c)
        tables[label] = table_rows(report)[1]

    order = [lambda: timed_probes(1, results["per-clip"]), lambda: timed_probes(args.workers, results["batched"])]
    for round_ in range(args.rounds):
        for variant in order if round_ % 2 == 0 else order[::-1]:
            variant()
    one, many = (statistics.median(v) for v in probe_times.values())
    print(f"\nprobe stage ({len(tables['1 process'])} rows, {len(clips)} clips), median of {args.rounds}: "
          f"1 process {one:.1f} s, {args.workers} processes {many:.1f} s, x{one / many:.2f}; CPU "
          + ", ".join(f"{k} {statistics.median(v):.1f} s" for k, v in probe_cpu.items()))
    same = tables["1 process"] == tables[f"{args.workers} processes"]
    print(f"  probe table from per-clip features in 1 process == from batched features in {args.workers} processes: {same}")
    if not same:
        for a, b in zip(*tables.values()):
            if a != b:
                print(f"    {a}\n    {b}")
    before = base + one
    after = statistics.median(runs["batched"]) + many
    again = statistics.median(runs["cached"]) + many
    print(f"\nfeatures + probes: before {before:.1f} s, after {after:.1f} s (x{before / after:.2f}), "
          f"second evaluation {again:.1f} s (x{before / again:.2f}); {len(clips)} clips")
    print(f"bench took {time.perf_counter() - started:.0f} s; {load_now()}")


if __name__ == "__main__":
    main()
