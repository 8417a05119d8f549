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

``--probes FEATURES.npz`` (a run's features.npz, e.g. of the full corpus) times the probe stage alone in this
process (CPU seconds, alternated): the probe fit of before (c89b3f5, copied below: GridSearchCV, every fit from
zero, C grid ``--before-cs``, default today's) against today's crossmodal.eval.probe.fit_probe (the C path
warm-started), and prints both tables row by row with their differences (``--before-cs
0.001,0.01,0.1,1,10,100,1000``: the grid of before 945d0fb too):

    .venv/bin/python experiments/perf/bench_eval.py --probes RUN/features.npz --rounds 2

``--standin DIR`` builds a cost stand-in for a 24-speaker RAVDESS (1,432 clips) from the 12-actor ``--source``: its
actors plus a copy of each under the next actor id (Actor_01 -> Actor_02, ...), the samples scaled by 0.9 and
re-saved, so that every feature is computed afresh. Its scores mean nothing (each copy's twin is in the training
part); only its cost counts. Then, e.g.:

    .venv/bin/python experiments/perf/bench_eval.py --standin /tmp/ravdess24
    python -m crossmodal.run experiment=eval_ravdess benchmark.source=/tmp/ravdess24 paths.data_dir=FRESH_DIR logger=csv

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
OLD_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # the probe's C grid before issue 22




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
    parser.add_argument("--probes", default=None, help="a run's features.npz: time the probe stage only, before vs today's probe fit")
    parser.add_argument("--before-cs", default=None, help="the C grid of the before fit, comma-separated (default: today's)")
    parser.add_argument("--standin", default=None, help="build the 24-speaker cost stand-in of --source in this folder, then stop")
    args = parser.parse_args()
    if args.standin:
        return build_standin(Path(args.source), Path(args.standin))
    if args.probes:
        return probe_fits(Path(args.probes), args)

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


def build_standin(source: Path, target: Path) -> None:
    """``--standin``: the actors of ``source`` and a copy of each under the next actor id, scaled by 0.9."""
    import shutil

    import soundfile as sf

    count = 0
    for actor in sorted(source.glob("Actor_*")):
        number = int(actor.name.split("_")[1])
        twin = target / f"Actor_{number + 1:02d}"
        if (source / twin.name).exists():
            raise SystemExit(f"{source} already has {twin.name}: --standin expects RAVDESS dev's odd actors only")
        shutil.copytree(actor, target / actor.name, dirs_exist_ok=True)
        twin.mkdir(parents=True, exist_ok=True)
        for clip in sorted(actor.iterdir()):
            wave, rate = sf.read(clip, dtype="float32")
            name = "-".join(clip.stem.split("-")[:-1] + [f"{number + 1:02d}"]) + clip.suffix
            sf.write(twin / name, 0.9 * wave, rate, subtype=sf.info(clip).subtype)
            count += 2
    print(f"{target}: {count} clips of {2 * len(list(source.glob('Actor_*')))} actors (a cost stand-in: copies scaled by 0.9)")


def fit_probe_before(features, labels, groups=None, Cs=OLD_CS, inner_folds=3, seed=0):
    """crossmodal.eval.probe.fit_probe at c89b3f5: GridSearchCV over the C grid, every lbfgs fit from zero (its own copy: the
    "before" of the bench; the pipeline, splitter and warning filters are the package's)."""
    from sklearn.model_selection import GridSearchCV

    from crossmodal.eval.probe import _inner_splitter, _probe, quiet_fits

    splitter = _inner_splitter(labels, groups, inner_folds, seed)
    with quiet_fits():
        if splitter is None or len(Cs) == 1:
            C = float(Cs[0]) if len(Cs) == 1 else 1.0
            return _probe(C, seed).fit(features, labels), C
        search = GridSearchCV(_probe(1.0, seed), {"logisticregression__C": list(Cs)}, cv=splitter, scoring="balanced_accuracy", n_jobs=1)
        search.fit(features, labels, groups=groups)
    return search.best_estimator_, float(search.best_params_["logisticregression__C"])


def probe_fits(path: Path, args) -> None:
    """The probe stage on a run's saved features, in this process: the fit of before vs today's, same folds."""
    from crossmodal.eval import probe
    from crossmodal.eval.probe import DEFAULT_CS
    from crossmodal.io.corpora import Clip, corpus_spec
    from crossmodal.tasks.evaluate import BenchmarkConfig, evaluate_features, table_rows

    data = np.load(path)
    spec = corpus_spec(args.corpus)
    clips = [Clip(Path(p), str(s), str(label), spec.to_ferplus[str(label)], args.corpus)
             for p, s, label in zip(data["paths"], data["speakers"], data["labels"])]
    class_names = [str(c) for c in data["class_names"]]
    sets = {k: data[k] for k in data.files if k not in ("paths", "speakers", "labels", "class_names")}
    before_cs = tuple(float(c) for c in args.before_cs.split(",")) if args.before_cs else tuple(DEFAULT_CS)
    print(f"machine: {machine()}; {load_now()}\ndata: {path}: {len(clips)} clips, {len(set(data['speakers'].tolist()))} speakers, "
          f"feature sets {', '.join(f'{k} {v.shape[1]}' for k, v in sets.items())}; one process")
    today = probe.fit_probe
    fits = {"before": fit_probe_before, "after": today}
    grids = {"before": before_cs, "after": tuple(DEFAULT_CS)}
    cpu: dict[str, list[float]] = {k: [] for k in fits}
    tables = {}
    for round_ in range(args.rounds):
        for name in list(fits) if round_ % 2 == 0 else list(fits)[::-1]:
            probe.fit_probe = fits[name]
            bench = BenchmarkConfig(corpus=args.corpus, source=str(path.parent), Cs=list(grids[name]))
            c = time.process_time()
            report = evaluate_features(clips, class_names, sets, sets["probe_logits"], bench, args.corpus, workers=1)
            cpu[name].append(time.process_time() - c)
            tables[name] = table_rows(report)
            print(f"  round {round_ + 1} {name}: CPU {cpu[name][-1]:.1f} s; {load_now()}", flush=True)
    probe.fit_probe = today
    cb, ca = (statistics.median(cpu[k]) for k in fits)
    print(f"\nprobe stage CPU, before (GridSearchCV, C grid {{{', '.join(f'{c:g}' for c in before_cs)}}}) vs after (warm-started C path, "
          f"{{{', '.join(f'{c:g}' for c in DEFAULT_CS)}}}), median of {args.rounds}: {cb:.1f} s vs {ca:.1f} s -> x{cb / ca:.2f}")
    columns, before = tables["before"]
    after = tables["after"][1]
    ua, wa, note = columns.index("UA % (mean ± std)"), columns.index("WA % (mean ± std)"), columns.index("note")
    print("| method | protocol | UA % before | UA % after | WA % before | WA % after | C before | C after |\n|---|---|---|---|---|---|---|---|")
    for x, y in zip(before, after):
        print(f"| {x[0]} | {x[1]} | {x[ua]} | {y[ua]}{'' if x[ua] == y[ua] else ' *'} | {x[wa]} | {y[wa]}{'' if x[wa] == y[wa] else ' *'} "
              f"| {x[note]} | {y[note]} |")
    moved = max(abs(float(x[i].split(" ±")[0]) - float(y[i].split(" ±")[0])) for x, y in zip(before, after) for i in (ua, wa))
    same = sum(x[ua] == y[ua] and x[wa] == y[wa] for x, y in zip(before, after))
    print(f"rows with UA and WA identical: {same} of {len(before)} (* = differs); largest move {moved:.1f} points; {load_now()}")


if __name__ == "__main__":
    main()
