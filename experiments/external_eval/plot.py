"""UA per method and protocol from task=evaluate run folders: grouped bars, and a table over runs.

    python experiments/external_eval/plot.py RUN_DIR [RUN_DIR ...] --out ua.png [--labels emodb ravdess]
    python experiments/external_eval/plot.py RUN_DIR [RUN_DIR ...] --table seeds.md

Each RUN_DIR holds the metrics.json and config.yaml of one `python -m crossmodal.run
experiment=eval_<corpus>` run. The bars show each run's mean +- std over its folds. `--table`
treats the runs as repeats of one evaluation (say the out-of-fold students of seeds 0, 1, 2) and
writes a Markdown table: per method and protocol, each run's UA, their mean and a 95 % t-interval
over the runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from crossmodal.eval.baselines import SPEAKER_NORM  # noqa: E402
from crossmodal.eval.metrics import t_interval  # noqa: E402
from crossmodal.utils.atomic import write_text  # noqa: E402
from crossmodal.utils.figures import save_and_send  # noqa: E402

METHODS = {
    "probe_logits": "probe on student logits (paper)",
    "probe_embedding": "probe on student embedding",
    "random_init_logits": "probe on random-init logits",
    "random_init_embedding": "probe on random-init embedding",
    "egemaps": "eGeMAPSv02 + LR",
    "mfcc": "MFCC functionals + LR",
    "zero_shot": "zero-shot (6 shared classes)",
    "chance": "chance (majority class)",
}
PROTOCOLS = {"clips": "k-fold CV over clips (paper)", "speakers": "speaker-independent"}


def load(run_dir: Path) -> tuple[str, dict[str, float]]:
    metrics_file, config_file = run_dir / "metrics.json", run_dir / "config.yaml"
    for path in (metrics_file, config_file):
        if not path.exists():
            raise SystemExit(f"{path}: missing; pass the folders of finished `experiment=eval_<corpus>` runs")
    config = yaml.safe_load(config_file.read_text())
    node = config.get("benchmark") or config.get("data") or {}
    return str(node.get("corpus", run_dir.name)), json.loads(metrics_file.read_text())


def methods_in(runs: list[dict[str, float]]) -> list[str]:
    """The methods (and their per-speaker-norm variants) any run scored, in METHODS order."""
    names = [m + suffix for m in METHODS for suffix in ("", SPEAKER_NORM)]
    return [m for m in names if any(f"eval/{m}/{p}/ua_mean" in metrics for metrics in runs for p in PROTOCOLS)]


def title(method: str) -> str:
    base = method.removesuffix(SPEAKER_NORM)
    return METHODS[base] + (", per-speaker norm" if method != base else "")


def table(runs: list[dict[str, float]], labels: list[str]) -> str:
    lines = [f"| method | protocol | {' | '.join(labels)} | mean UA % | 95 % t-interval over runs |",
             "|---|---|" + "---|" * len(labels) + "---|---|"]
    for protocol, protocol_title in PROTOCOLS.items():
        for method in methods_in(runs):
            values = [metrics.get(f"eval/{method}/{protocol}/ua_mean") for metrics in runs]
            if any(v is None for v in values):
                continue
            mean, low, high = t_interval([100 * v for v in values])
            cells = " | ".join(f"{100 * v:.1f}" for v in values)
            lines.append(f"| {title(method)} | {protocol_title} | {cells} | **{mean:.1f}** | [{low:.1f}, {high:.1f}] |")
    return "\n".join(lines)


def bars(runs: list[dict[str, float]], labels: list[str], out: Path) -> Path:
    methods = methods_in(runs)
    fig, axes = plt.subplots(1, len(PROTOCOLS), figsize=(5 + 1.5 * len(runs), 4), sharey=True)
    width = 0.8 / max(len(methods), 1)
    for ax, (protocol, protocol_title) in zip(axes, PROTOCOLS.items()):
        for i, method in enumerate(methods):
            means = [100 * (metrics.get(f"eval/{method}/{protocol}/ua_mean") or np.nan) for metrics in runs]
            stds = [100 * (metrics.get(f"eval/{method}/{protocol}/ua_std") or 0) for metrics in runs]
            ax.bar(np.arange(len(runs)) + (i - (len(methods) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=title(method))
        ax.set_xticks(range(len(runs)), labels)
        ax.set_title(protocol_title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("UA % (mean per-class recall)")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=7, loc="lower center", ncol=min(len(methods), 4))
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return save_and_send(fig, out.stem, out.parent, [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("ua.png"), help="the bar chart (PNG)")
    parser.add_argument("--table", type=Path, help="also write the table over runs (Markdown) here and print it")
    parser.add_argument("--labels", nargs="+", help="one label per run (default: the corpus)")
    args = parser.parse_args(argv)
    loaded = [load(r) for r in args.runs]
    runs = [metrics for _, metrics in loaded]
    labels = args.labels or [corpus for corpus, _ in loaded]
    if len(labels) != len(runs):
        raise SystemExit(f"--labels: {len(labels)} labels for {len(runs)} runs")
    print(f"wrote {bars(runs, labels, args.out)}")
    if args.table:
        text = table(runs, labels)
        write_text(args.table, text + "\n")
        print(text)
        print(f"wrote {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
