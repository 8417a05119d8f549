"""Teacher on CPU (issue 22, goal 2): the face teacher, old forward vs its inference form (issue 22), side by side in one run.

    .venv/bin/python experiments/perf/bench_teacher.py                      # 1024 FER+ test faces, 3 rounds
    .venv/bin/python experiments/perf/bench_teacher.py --check              # + equality and accuracy on all of FER+ test
    .venv/bin/python experiments/perf/bench_teacher.py --threads 1 --faces 512

"old": the network as it ran before (plain backbone, flip average, eval, inference_mode); "new":
``FaceTeacher.forward`` as extraction, ``teacher_eval`` and the timeline now call it (eval, no
gradients: :meth:`FaceTeacher.inference_backbone`). Both go through ``crossmodal.pipeline.extract.teacher_logits``
(preprocessing 48->44 included), alternated A B, B A ... ``--repeats`` times; medians of images/s
by wall clock and by process CPU time (the CPU figure is steadier on a shared machine). Faces:
FER+ test from ``--ferplus`` (default ../shared/data/ferplus) when there, else the shipped demo faces.
``--check``: max |Δlogit|, argmax agreement and FER+ test accuracy (cntk cleaning, majority label)
of both paths on every face of FER+ test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perfkit import load_now, machine  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEMO_FACES = REPO / "crossmodal" / "assets" / "demo" / "ferplus"


class OldForward(nn.Module):
    """The teacher's forward before issue 22: the plain backbone (BN unfolded, NCHW), flip averaged."""

    def __init__(self, teacher) -> None:
        super().__init__()
        self.teacher = teacher
        self.preprocess = teacher.preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.teacher.backbone
        logits = net(x)
        if self.teacher.tta_flip:
            logits = (logits + net(torch.flip(x, dims=[-1]))) / 2
        return logits


def load_faces(ferplus: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """uint8 [N, 48, 48] faces of FER+ test (every face), their majority labels, which are kept by the cntk
    cleaning (the project's accuracy: cntk, majority label), and where they came from."""
    from crossmodal.io.ferplus import load_ferplus_image, read_ferplus

    source = ferplus if ferplus is not None and (ferplus / "FER2013Test").is_dir() else DEMO_FACES
    items = read_ferplus(source, splits=["test"], cleaning="none")
    kept = {item.name: item.majority for item in read_ferplus(source, splits=["test"], cleaning="cntk")}
    faces = np.stack([load_ferplus_image(item) for item in items])
    labels = np.array([kept.get(item.name, -1) for item in items])
    return faces, labels, labels >= 0, f"{source} (FER2013Test, {len(items)} faces, {len(kept)} kept by cntk cleaning)"


def check(teacher, old, faces: np.ndarray, labels: np.ndarray, cntk: np.ndarray, batch: int) -> dict:
    from crossmodal.pipeline.extract import teacher_logits

    new_logits, old_logits = teacher_logits(teacher, faces, batch), teacher_logits(old, faces, batch)
    new_top, old_top = new_logits.argmax(1), old_logits.argmax(1)
    return {"faces": len(faces), "max_abs_diff": float(np.abs(new_logits - old_logits).max()),
            "argmax_agreement": float((new_top == old_top).mean()), "cntk_faces": int(cntk.sum()),
            "acc_new": float((new_top[cntk] == labels[cntk]).mean()), "acc_old": float((old_top[cntk] == labels[cntk]).mean())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ferplus", default=str(REPO.parent / "shared" / "data" / "ferplus"), help="FER+ root (FER2013Test/)")
    parser.add_argument("--teacher", default=None, help="teacher file (default: the shipped teacher_cpu.safetensors)")
    parser.add_argument("--faces", type=int, default=1024, help="faces timed per round (0: all)")
    parser.add_argument("--batch-size", type=int, default=256, help="teacher batch (extraction's data.batch_size default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--check", action="store_true", help="equality and accuracy on every face of FER+ test")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from crossmodal.models.loading import load_teacher
    from crossmodal.pipeline.extract import teacher_logits

    teacher = load_teacher(args.teacher)
    old = OldForward(teacher).eval()
    print(f"Teacher on CPU {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}; {load_now()}", flush=True)
    all_faces, all_labels, cntk, where = load_faces(Path(args.ferplus) if args.ferplus else None)
    faces = all_faces[: args.faces] if args.faces else all_faces
    print(f"faces: {len(faces)} of {where}; teacher {teacher.name}, {teacher.input_size} px, flip TTA {teacher.tta_flip}, "
          f"batch {args.batch_size}", flush=True)
    variants = {"old": old, "new": teacher}
    for net in variants.values():  # warm-up (and the inference form is built here, once)
        teacher_logits(net, faces[: args.batch_size], args.batch_size)
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for round_ in range(args.repeats):
        for name in list(variants) if round_ % 2 == 0 else list(variants)[::-1]:
            tick, tock = time.perf_counter(), time.process_time()
            teacher_logits(variants[name], faces, args.batch_size)
            wall[name].append(time.perf_counter() - tick)
            cpu[name].append(time.process_time() - tock)
    rate = {k: len(faces) / statistics.median(v) for k, v in wall.items()}
    cpu_rate = {k: len(faces) / statistics.median(v) for k, v in cpu.items()}
    paired = statistics.median(o / n for o, n in zip(wall["old"], wall["new"]))
    result = {"machine": machine(), "faces": len(faces), "source": where, "batch_size": args.batch_size, "repeats": args.repeats,
              "old_images_per_s": round(rate["old"], 1), "new_images_per_s": round(rate["new"], 1),
              "ratio": round(rate["new"] / rate["old"], 2), "paired_ratio": round(paired, 2),
              "old_images_per_cpu_s": round(cpu_rate["old"], 1), "new_images_per_cpu_s": round(cpu_rate["new"], 1),
              "cpu_ratio": round(cpu_rate["new"] / cpu_rate["old"], 2),
              "wall_s": {k: [round(t, 3) for t in v] for k, v in wall.items()}, "load": load_now()}
    print(f"Teacher new / old = {result['ratio']:.2f}x by wall clock (paired {result['paired_ratio']:.2f}x; target >= 4x): "
          f"{result['new_images_per_s']} vs {result['old_images_per_s']} images/s; by process CPU time "
          f"{result['cpu_ratio']:.2f}x ({result['new_images_per_cpu_s']} vs {result['old_images_per_cpu_s']} images per CPU-s); "
          f"{load_now()}", flush=True)
    if args.check:
        result["check"] = a = check(teacher, old, all_faces, all_labels, cntk, args.batch_size)
        print(f"Teacher check on all {a['faces']} faces of FER+ test: max |Δlogit| {a['max_abs_diff']:.2e} (<= 1e-4), argmax "
              f"agreement {a['argmax_agreement']:.4%}; accuracy (cntk, majority label, {a['cntk_faces']} faces) new "
              f"{a['acc_new']:.2%} vs old {a['acc_old']:.2%}; {load_now()}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
