"""Grouped bars of UA (mean ± std over folds) per method and protocol, from task=evaluate run folders.

    python experiments/external_eval/plot.py RUN_DIR [RUN_DIR ...] --out ua.png

Each RUN_DIR holds the metrics.json of one `python -m crossmodal.run experiment=eval_<corpus>` run;
the corpus name is read from its config.yaml.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

METHODS = ("probe_logits", "probe_embedding", "random_init_logits", "random_init_embedding", "zero_shot", "chance")
PROTOCOLS = ("clips", "speakers")


def load(run_dir: Path) -> tuple[str, dict[str, float]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    return str(config["data"]["corpus"]), metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("ua.png"))
    parser.add_argument("--labels", nargs="+", help="one x label per run (default: the corpus)")
    args = parser.parse_args()
    runs = [load(r) for r in args.runs]
    methods = [m for m in METHODS if any(f"eval/{m}/clips/ua_mean" in metrics for _, metrics in runs)]
    fig, axes = plt.subplots(1, len(PROTOCOLS), figsize=(5 + 1.5 * len(runs), 4), sharey=True)
    width = 0.8 / len(methods)
    for ax, protocol in zip(axes, PROTOCOLS):
        for i, method in enumerate(methods):
            means = [100 * (metrics.get(f"eval/{method}/{protocol}/ua_mean") or np.nan) for _, metrics in runs]
            stds = [100 * (metrics.get(f"eval/{method}/{protocol}/ua_std") or 0) for _, metrics in runs]
            ax.bar(np.arange(len(runs)) + (i - (len(methods) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=method)
        ax.set_xticks(range(len(runs)), args.labels or [corpus for corpus, _ in runs])
        ax.set_title({"clips": "k-fold CV over clips (paper)", "speakers": "speaker-independent"}[protocol])
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("UA % (mean per-class recall)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower center", ncol=len(methods))
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
