"""Train the CPU teacher with the same modules as `experiment=teacher_cpu`, without Hydra.

Used for the first shipped teacher while the Hydra entry point was being built; the figures in
README.md come from the command given there.

    .venv/bin/python experiments/ferplus_teacher/train_cpu.py --source ../shared/data/ferplus --out logs/teacher_cpu_script
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from crossmodal.data.ferplus import FerPlusDataModule
from crossmodal.lit.teacher import TeacherFER
from crossmodal.models.teacher import save_teacher

PREPROCESS = {"channels": 1, "resize": 48, "input_size": 44, "mean": [128.0], "std": [64.0]}
AUGMENT = {"flip_p": 0.5, "affine_p": 0.8, "zoom": [0.9, 1.1], "translate": 0.06, "rotations": [-15, 15],
           "skews": [-0.1, 0.1], "continuous": True, "padding_mode": "border"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True)
    parser.add_argument("--shards", default="data/ferplus/cntk")
    parser.add_argument("--out", default="logs/teacher_cpu_script")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batches", type=int, default=0, help="batches per epoch (0: one pass over train)")
    parser.add_argument("--backbone", default="vgg_small")
    parser.add_argument("--widths", default="32,64,128,256")
    parser.add_argument("--depths", default="2,2,3,3")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--wd", type=float, default=5e-4)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--max-minutes", type=float, default=57)
    parser.add_argument("--no-val", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on a shared 2-core machine 1 thread beat 2 threads 3x (oversubscription)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    L.seed_everything(0)
    kwargs = {"widths": [int(w) for w in args.widths.split(",")], "depths": [int(d) for d in args.depths.split(",")],
              "input_size": PREPROCESS["input_size"]} if args.backbone == "vgg_small" else {}
    data = FerPlusDataModule(source=args.source, shard_dir=args.shards, cleaning="cntk", label_mode="probability",
                             batch_size=128, num_workers=1, preprocess=PREPROCESS, augment=AUGMENT,
                             batches_per_epoch=args.batches or None)
    model = TeacherFER(backbone=args.backbone, backbone_kwargs=kwargs, preprocess=PREPROCESS, label_mode="probability",
                       drop_rate=0.4, optimizer=args.optimizer, lr=args.lr, momentum=0.9, nesterov=True,
                       weight_decay=args.wd, scheduler="cosine", warmup_epochs=1, tta_flip=True, plot_every_n_epochs=5,
                       time_budget_minutes=args.max_minutes)
    out = Path(args.out)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=args.precision, max_epochs=args.epochs,
                        max_time={"minutes": args.max_minutes + 5}, default_root_dir=str(out),
                        logger=CSVLogger(str(out), name="", version=""), log_every_n_steps=20,
                        limit_val_batches=0 if args.no_val else 1.0, num_sanity_val_steps=0,
                        callbacks=[ModelCheckpoint(dirpath=out / "checkpoints", save_last=True, save_top_k=0),
                                   LearningRateMonitor("step")], enable_progress_bar=False)
    start = time.time()
    trainer.fit(model, datamodule=data)
    minutes = (time.time() - start) / 60
    results = {"train_minutes": minutes}
    for split in ("val", "test"):
        run = trainer.validate if split == "val" else trainer.test
        metrics = run(model, datamodule=data, verbose=False)[0]
        results.update(metrics)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    save_teacher(model, out / "teacher_cpu.safetensors", meta={"train_minutes": minutes, **{k: float(v) for k, v in results.items()}})
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
