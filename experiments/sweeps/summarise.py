"""Summarise a sweep: one row per job with its varied settings and the figures that matter.

    python experiments/sweeps/summarise.py logs/distill_cpu/multiruns/2026-11-22_10-00-00
    python experiments/sweeps/summarise.py RUN_DIR... --sort test/auc_unheard/mean --markdown out.md
    python experiments/sweeps/summarise.py --wandb-csv export.csv     # a W&B runs-table export

It reads each job's metrics.json and the overrides Hydra recorded (.hydra/overrides.yaml), so it
works on local run folders, on a cluster's shared file system, and offline.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import yaml

COLUMNS = {
    "unheard AUC": ["test/auc_unheard/mean", "val/auc_unheard/mean"],
    "unheard AUC (paper)": ["test/auc_unheard/mean_paper", "val/auc_unheard/mean_paper"],
    "heard AUC": ["test/auc_heard/mean", "val/auc_heard/mean"],
    "external UA": ["test/ua_unheard", "eval/probe_logits/speakers/ua_mean", "test/ua"],
}


def job_dirs(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if (path / "metrics.json").exists():
            found.append(path)
        else:
            found += sorted(p.parent for p in path.glob("*/metrics.json"))
    return found


def varied_settings(jobs: list[Path]) -> list[dict[str, str]]:
    settings = []
    for job in jobs:
        overrides_file = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.exists() else []
        settings.append(dict(o.split("=", 1) for o in overrides if "=" in o and not o.startswith("hydra")))
    keys = {k for s in settings for k in s}
    varying = sorted(k for k in keys if len({s.get(k) for s in settings}) > 1)
    return [{k: s.get(k, "") for k in varying} for s in settings]


def first(metrics: dict, names: list[str]):
    return next((metrics[n] for n in names if metrics.get(n) is not None), None)


def rows_from_runs(paths: list[Path]) -> tuple[list[str], list[list]]:
    jobs = job_dirs(paths)
    if not jobs:
        raise SystemExit(f"no run folders with metrics.json under {', '.join(map(str, paths))}")
    settings = varied_settings(jobs)
    header = ["run"] + (list(settings[0]) if settings else []) + list(COLUMNS)
    rows = []
    for job, setting in zip(jobs, settings):
        metrics = json.loads((job / "metrics.json").read_text())
        rows.append([job.name, *setting.values(), *(first(metrics, names) for names in COLUMNS.values())])
    return header, rows


def rows_from_wandb_csv(path: Path) -> tuple[list[str], list[list]]:
    with open(path) as f:
        records = list(csv.DictReader(f))
    header = ["run"] + list(COLUMNS)
    rows = [[r.get("Name", "")] + [first({k: _number(v) for k, v in r.items()}, names) for names in COLUMNS.values()] for r in records]
    return header, rows


def _number(text: str):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def render(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path, help="sweep folders or run folders")
    parser.add_argument("--wandb-csv", type=Path, help="a CSV exported from the W&B runs table")
    parser.add_argument("--sort", default="unheard AUC", help="column to sort by (descending)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    if not args.runs and not args.wandb_csv:
        parser.error("give sweep/run folders or --wandb-csv")
    header, rows = rows_from_wandb_csv(args.wandb_csv) if args.wandb_csv else rows_from_runs(args.runs)
    if args.sort in header:
        index = header.index(args.sort)
        rows.sort(key=lambda r: -(r[index] if isinstance(r[index], (int, float)) else float("-inf")))
    table = render(header, rows)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
