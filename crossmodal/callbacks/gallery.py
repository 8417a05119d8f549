"""A few test clips on the dashboard: the audio, the teacher's and the student's emotion
distributions, and the face frames the teacher saw (from the pair shards, when they are at hand)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import soundfile as sf
import torch

from crossmodal.emotions import EMOTIONS
from crossmodal.io.audio import SAMPLE_RATE
from crossmodal.utils.figures import is_wandb, save_and_send
from crossmodal.utils.plots import distribution_bars

log = logging.getLogger(__name__)


def find_pair_frames(pairs_dir: str | Path, keys: set[str], max_frames: int = 4) -> dict[str, np.ndarray]:
    """Face frames of the pair samples named ``keys`` (stops reading once all are found)."""
    from crossmodal.pipeline.pairs import decode_pair_frames
    from crossmodal.pipeline.shards import iter_shard, load_manifest

    found: dict[str, dict[str, Any]] = {}
    for path in load_manifest(pairs_dir).paths():
        for sample in iter_shard(path):
            if sample["__key__"] in keys:
                found[sample["__key__"]] = sample
        if len(found) == len(keys):
            break
    frames = {}
    for key, sample in found.items():
        try:
            images, _ = decode_pair_frames(sample)
        except ValueError as exn:
            log.warning("gallery: no frames for %s: %s", key, exn)
            continue
        step = max(1, len(images) // max_frames)
        frames[key] = images[::step][:max_frames]
    return frames


def gallery_figure(rows: list[dict[str, Any]]):
    import matplotlib.pyplot as plt

    n_frames = max((len(r.get("frames", [])) for r in rows), default=0)
    cols = n_frames + 1
    fig = plt.figure(figsize=(2.0 * n_frames + 6.5, 2.4 * len(rows)))
    grid = fig.add_gridspec(len(rows), cols, width_ratios=[1] * n_frames + [4])
    for i, row in enumerate(rows):
        for j, frame in enumerate(row.get("frames", [])):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(frame, cmap="gray" if frame.ndim == 2 else None)
            ax.axis("off")
        ax = fig.add_subplot(grid[i, cols - 1])
        distribution_bars(ax, row["teacher"], row["student"], EMOTIONS, labels=i == len(rows) - 1)
        ax.set_title(row["title"], fontsize=9)
        if i == 0:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write_samples(folder: Path, rows: list[dict[str, Any]], waves: list[np.ndarray]) -> Path:
    """Each clip's audio (<key>.flac) and face frames (<key>_face<i>.png), and samples.json listing them
    with the teacher's and the student's distributions (the run's report.html shows them)."""
    from PIL import Image

    from crossmodal.utils.atomic import write_json

    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for row, wave in zip(rows, waves):
        sf.write(folder / f"{row['key']}.flac", wave, SAMPLE_RATE, format="FLAC")
        frames = []
        for j, frame in enumerate(row.get("frames", [])):
            frames.append(f"{row['key']}_face{j}.png")
            Image.fromarray(np.asarray(frame, dtype=np.uint8).squeeze()).save(folder / frames[-1])
        samples.append({"key": row["key"], "title": row["title"], "audio": f"{row['key']}.flac", "frames": frames,
                        "teacher": [float(v) for v in row["teacher"]], "student": [float(v) for v in row["student"]],
                        "emotions": list(EMOTIONS)})
    return write_json(folder / "samples.json", {"samples": samples})


class SampleGallery(L.Callback):
    """At the end of testing, show ``n_samples`` clips of the first test batch (rank 0 only)."""

    def __init__(self, n_samples: int = 4) -> None:
        self.n_samples = n_samples
        self._rows: list[dict[str, Any]] = []
        self._waves: list[np.ndarray] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx != 0 or not trainer.is_global_zero or not isinstance(batch, dict) or "target" not in batch or "wave" not in batch:
            return
        n = min(self.n_samples, len(batch["key"]))
        with torch.no_grad():
            logits, _ = pl_module(batch["wave"][:n], batch["lengths"][:n])
        student = logits.float().softmax(-1).cpu().numpy()
        teacher = batch["target"][:n].float().softmax(-1).cpu().numpy()
        for i in range(n):
            length = int(batch["lengths"][i])
            self._waves.append(batch["wave"][i, :length].cpu().numpy())
            label = int(batch["label"][i]) if "label" in batch else -1
            truth = f", acted: {EMOTIONS[label]}" if 0 <= label < len(EMOTIONS) else ""
            self._rows.append({"key": batch["key"][i], "teacher": teacher[i], "student": student[i],
                               "title": f"{batch['key'][i]}{truth}"})

    def on_test_end(self, trainer, pl_module) -> None:
        if not self._rows or not trainer.is_global_zero:
            return
        run_dir = Path(trainer.default_root_dir)
        pairs = _pairs_dir(trainer)
        if pairs:
            try:
                frames = find_pair_frames(pairs, {r["key"] for r in self._rows})
            except (FileNotFoundError, OSError) as exn:
                log.warning("gallery: pair shards at %s unreadable (%s); showing audio only", pairs, exn)
                frames = {}
            for row in self._rows:
                if row["key"] in frames:
                    row["frames"] = list(frames[row["key"]])
        write_samples(run_dir / "plots" / "samples", self._rows, self._waves)
        save_and_send(gallery_figure(self._rows), "test/samples", run_dir / "plots", trainer.loggers)
        for logger in trainer.loggers:
            if is_wandb(logger):
                import wandb

                logger.experiment.log({"test/sample_audio": [
                    wandb.Audio(wave, sample_rate=SAMPLE_RATE, caption=row["title"]) for row, wave in zip(self._rows, self._waves)]})
        self._rows, self._waves = [], []


def _pairs_dir(trainer) -> str | None:
    datamodule = getattr(trainer, "datamodule", None)
    manifest = getattr(datamodule, "manifest", None)
    if not callable(manifest):
        return None
    try:
        found = manifest()
    except (FileNotFoundError, OSError):
        return None
    return str(found.root) if found.meta.get("kind") == "pairs" else found.meta.get("pairs")
