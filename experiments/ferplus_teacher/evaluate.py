"""FER+ val and test accuracy of a teacher file, with and without flip averaging; optionally ship it.

    .venv/bin/python experiments/ferplus_teacher/evaluate.py --teacher logs/teacher_cpu_run2/teacher_cpu.safetensors \
        --shards data/ferplus/cntk --out experiments/ferplus_teacher/results.json [--ship]

--ship writes crossmodal/assets/teacher_cpu.safetensors (a teacher model file, fp16 weights) with the measured
figures in its header (provenance.metrics);
the figures are re-measured on the fp16 file, so the recorded accuracy is the shipped file's.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import lightning as L
import torch

from crossmodal.data.ferplus import FerPlusDataModule
from crossmodal.lit.teacher import TeacherFER
from crossmodal.models.loading import load_teacher
from crossmodal.models.teacher import DEFAULT_TEACHER, save_teacher


def evaluate(teacher_path: str, shards: str, tta: bool, root: Path) -> dict[str, float]:
    model = TeacherFER(init_from=teacher_path, tta_flip=tta)
    data = FerPlusDataModule(shard_dir=shards, eval_batch_size=256, num_workers=1, preprocess=model.teacher.spec.as_dict())
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(root / ("tta" if tta else "plain")))
    results = {}
    results.update(trainer.validate(model, datamodule=data, verbose=False)[0])
    results.update(trainer.test(model, datamodule=data, verbose=False)[0])
    return {k: float(v) for k, v in results.items() if k.startswith(("val/", "test/")) and "loss" not in k}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--shards", default="data/ferplus/cntk")
    parser.add_argument("--out", default="experiments/ferplus_teacher/results.json")
    parser.add_argument("--ship", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    root = out.parent / "eval_runs"
    start = time.time()
    source = load_teacher(args.teacher)
    candidate = args.teacher
    if args.ship:  # measure the exact file that ships (fp16 weights, flip averaging on)
        save_teacher(source, DEFAULT_TEACHER, meta=getattr(source, "meta", {}), tta_flip=True)
        candidate = str(DEFAULT_TEACHER)
    report = {"teacher": args.teacher, "flip_tta": evaluate(candidate, args.shards, True, root),
              "no_tta": evaluate(candidate, args.shards, False, root)}
    report["eval_seconds"] = time.time() - start
    report["machine"] = f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    if args.ship:
        meta = dict(getattr(source, "meta", {}))
        meta = {k: v for k, v in meta.items() if not k.startswith(("val/", "test/"))}
        meta.update(report["flip_tta"])
        meta.update({"no_tta/" + k: v for k, v in report["no_tta"].items()})
        meta["evaluated"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        save_teacher(load_teacher(DEFAULT_TEACHER), DEFAULT_TEACHER, meta=meta, tta_flip=True,
                     provenance={"data": "FER+ train, cntk cleaning", "run": str(args.teacher)})
        print(f"shipped {DEFAULT_TEACHER} ({DEFAULT_TEACHER.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
