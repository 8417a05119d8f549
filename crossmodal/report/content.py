"""What a run folder holds, read for the report: its config, overrides, metrics (grouped), log times,
figures with captions, tables, model files and the sample gallery. Files only: nothing is imported
from the run, nothing is unpickled (a model file's JSON header is read by ``read_header``), and no
file is read or linked whose real path lies outside the run folder (a symlink to /etc/passwd stays
a name in "Unreadable files")."""
from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

RUN_MARKERS = ("metrics.json", "config.yaml", ".hydra", "run.log")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")
AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3", ".m4a")
AUDIO_TYPES = {".flac": "audio/flac", ".wav": "audio/wav", ".ogg": "audio/ogg", ".mp3": "audio/mpeg", ".m4a": "audio/mp4"}
SAMPLES_DIR = Path("plots") / "samples"  # crossmodal/callbacks/gallery.py: clips, face frames, samples.json
NOT_A_RUN_PART = {".hydra", "wandb", "csv", "plots", "checkpoints", "tables", "tensorboard", "lightning_logs"}


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / marker).exists() for marker in RUN_MARKERS)


def inside(path: Path, root: Path) -> bool:
    """``path`` is a file whose real location (symlinks followed) is ``root`` or below it."""
    real = Path(path).resolve()
    return real.is_file() and real.is_relative_to(Path(root).resolve())


@dataclass
class Problems:
    """Files that could not be read: the page says which and why instead of failing."""

    items: list[str] = field(default_factory=list)

    def add(self, path: Path, exn: Exception) -> None:
        message = f"{path}: {exn}"
        if message not in self.items:
            log.warning("report: could not read %s", message)
            self.items.append(message)

    def kept(self, paths: list[Path], root: Path) -> list[Path]:
        """``paths`` that are files inside ``root``; a link out of it is named here, never read or linked."""
        out = []
        for path in paths:
            if inside(path, root):
                out.append(path)
            elif not path.resolve().is_relative_to(Path(root).resolve()):
                self.add(path.relative_to(root) if path.is_relative_to(root) else path,
                         ValueError("links outside the run folder: left out of the page"))
        return out


def read_text(root: Path, name: str | Path, problems: Problems) -> str | None:
    """``root/name`` as text (undecodable bytes replaced); None when it is missing or links outside ``root``."""
    path = root / name
    if not (path.is_file() or path.is_symlink()) or not problems.kept([path], root):
        return None
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exn:
        problems.add(path, exn)
        return None


def read_data(root: Path, name: str | Path, problems: Problems, parse: Callable[[str], Any] = yaml.safe_load) -> Any:
    """``root/name`` parsed (YAML; JSON with ``parse=json.loads``); None when missing, linked out or unparsable."""
    text = read_text(root, name, problems)
    if text is None:
        return None
    try:
        return parse(text)
    except (yaml.YAMLError, ValueError) as exn:
        problems.add(root / name, exn)
        return None


def read_metrics(run_dir: Path, problems: Problems) -> dict[str, Any]:
    metrics = read_data(run_dir, "metrics.json", problems, json.loads)
    if metrics is not None and not isinstance(metrics, dict):
        problems.add(run_dir / "metrics.json", ValueError("expected a JSON object of 'stage/name': value pairs"))
    return metrics if isinstance(metrics, dict) else {}


CONFIG_NAMES = ("config.yaml", ".hydra/config.yaml")  # the resolved config, else Hydra's copy


def config_name(run_dir: Path) -> str | None:
    return next((name for name in CONFIG_NAMES if inside(run_dir / name, run_dir)), None)


def overrides(run_dir: Path, problems: Problems) -> list[str]:
    value = read_data(run_dir, ".hydra/overrides.yaml", problems)
    return [str(v) for v in value] if isinstance(value, list) else []


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")


def log_times(run_dir: Path) -> tuple[datetime | None, datetime | None]:
    """First and last time stamps of run.log (Hydra's ``[YYYY-mm-dd HH:MM:SS,mmm]`` lines)."""
    head, tail = _log_ends(run_dir, 4096, 65536)
    stamps = [m.group(1) for m in map(_STAMP.match, head + tail) if m]
    if not stamps:
        return None, None
    return datetime.fromisoformat(stamps[0]), datetime.fromisoformat(stamps[-1])


def log_tail(run_dir: Path, lines: int = 60) -> str:
    return "\n".join(_log_ends(run_dir, 0, 32768)[1][-lines:])


def _log_ends(run_dir: Path, head: int, tail: int) -> tuple[list[str], list[str]]:
    """The lines of run.log's first ``head`` and last ``tail`` bytes (none when it is missing or links out)."""
    path = run_dir / "run.log"
    if not inside(path, run_dir):
        return [], []
    with open(path, "rb") as f:
        first = f.read(head).decode("utf-8", "replace").splitlines()
        f.seek(max(0, path.stat().st_size - tail))
        return first, f.read().decode("utf-8", "replace").splitlines()


HIGHER_IS_BETTER = ("auc", "ua", "wa", "acc", "recall", "f1")
_HEADLINE = [re.compile(p) for p in (r"auc_[a-z]+/mean", r"auc/mean", r"ua(_[a-z]+)?", r"wa(_[a-z]+)?", r"acc", r"loss")]
STAGE_ORDER = ("test", "val", "eval", "demo", "extract", "train")


def headline(metrics: Mapping[str, Any], first: str | None = None, limit: int = 8) -> dict[str, Any]:
    """The few metrics a reader looks for first: mean AUCs, UA, WA, accuracy, loss of the last stage
    that has them (test before val); ``first`` (the config's optimized_metric) leads."""
    numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) or v is None}
    chosen: dict[str, Any] = {}
    if first and first in metrics:
        chosen[first] = metrics[first]
    for stage in STAGE_ORDER + tuple(sorted({k.split("/", 1)[0] for k in numeric} - set(STAGE_ORDER))):
        for pattern in _HEADLINE:
            for key in sorted(numeric):
                prefix, _, rest = key.partition("/")
                if prefix == stage and pattern.fullmatch(rest) and "_train" not in rest:  # held-out splits first
                    chosen.setdefault(key, numeric[key])
        if len(chosen) > (1 if first else 0):
            break
    return dict(list((chosen or numeric).items())[:limit])


def better(key: str) -> str | None:
    """'max' or 'min' for a metric whose direction is known."""
    name = key.rsplit("/", 2)[-2] if key.count("/") >= 2 else key.rsplit("/", 1)[-1]
    name = name.split("_")[0]
    if name in HIGHER_IS_BETTER:
        return "max"
    if name == "loss":
        return "min"
    return None


@dataclass
class MetricTable:
    title: str
    columns: list[str]
    rows: list[list[Any]]


def metric_tables(metrics: Mapping[str, Any]) -> list[MetricTable]:
    """``stage/family_split/class`` keys pivoted into one table per stage and family (rows: classes,
    columns: splits), and each stage's ``stage/name[_split]`` scalars into one table."""
    splits = {"heard", "unheard", "train", "val", "test"}
    splits |= {key.split("/")[1].partition("_")[2] or "value" for key in metrics if key.count("/") >= 2}
    families: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 1:
            families[("other", "")][parts[0]]["value"] = value
        elif len(parts) == 2:
            head, _, split = parts[1].rpartition("_")
            row, column = (head, split) if head and split in splits else (parts[1], "value")
            families[(parts[0], "")][row][column] = value
        else:
            family, _, split = parts[1].partition("_")
            families[(parts[0], family)]["/".join(parts[2:])][split or "value"] = value
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    tables = []
    for (stage, family), rows in sorted(families.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][0] == "other", kv[0])):
        columns = list(dict.fromkeys(c for cells in rows.values() for c in cells))
        columns.sort(key=lambda c: (c != "value", ["train", "heard", "unheard"].index(c) if c in ("train", "heard", "unheard") else 9, c))
        title = f"{stage} / {family}" if family else (stage if stage != "other" else "other")
        tables.append(MetricTable(title, ["name", *columns], [[name, *(cells.get(c) for c in columns)] for name, cells in rows.items()]))
    return tables


STAGES = {"test": "test", "val": "validation", "eval": "evaluation", "extract": "extraction", "demo": "demo", "timeline": "timeline"}
KINDS = {"roc": "ROC curves per emotion", "confusion": "Confusion matrix", "curves": "Training curves",
         "samples": "Sample gallery: face frames, teacher vs student distributions", "hist": "Histogram",
         "histogram": "Histogram", "dominant": "Dominant emotion counts", "timeline": "Timeline"}
WORDS = {"heard": "heard identities", "unheard": "unheard identities", "train": "training identities",
         "auc": "AUC", "ua": "UA (unweighted average recall)", "wa": "WA (accuracy)", "acc": "accuracy",
         "loss": "loss", "recall": "per-class recall", "soft": "soft-target loss", "lr": "learning rate"}
SECTIONS = (("roc", "ROC curves"), ("confusion", "Confusion matrices"), ("curves", "Training curves"), ("", "Other figures"))


@dataclass
class Figure:
    path: Path
    caption: str
    kind: str  # a key of KINDS, or "" for anything else


def caption(stem: str) -> tuple[str, str]:
    """(caption, kind) from a figure's file name, e.g. ``test_roc_unheard`` ->
    ("ROC curves per emotion: unheard identities (test)", "roc")."""
    tokens = [t for t in re.split(r"[_\-\s]+", stem.lower()) if t]
    stage = tokens.pop(0) if len(tokens) > 1 and tokens[0] in STAGES else None
    kind = next((t for t in tokens if t in KINDS), "")
    if kind:
        tokens.remove(kind)
    if kind == "dominant" and tokens[:1] == ["emotion"]:
        tokens.pop(0)
    rest = ", ".join(WORDS.get(t, t) for t in tokens)
    text = KINDS.get(kind, "Figure") + (f": {rest}" if rest else "")
    return text + (f" ({STAGES[stage]})" if stage else ""), kind


def run_files(run_dir: Path, problems: Problems, *patterns: str) -> list[Path]:
    """The files matching ``patterns`` (globs relative to the run folder), each pattern's sorted, that
    lie inside the run folder; links out of it are named in ``problems`` instead."""
    found = [p for pattern in patterns for p in sorted(run_dir.glob(pattern)) if p.is_file() or p.is_symlink()]
    return problems.kept(found, run_dir)


def figures(run_dir: Path, problems: Problems) -> list[Figure]:
    """Every image under plots/ (and beside the page), except the gallery's face frames."""
    found = [p for p in run_files(run_dir, problems, "plots/**/*", "*")
             if p.suffix.lower() in IMAGE_SUFFIXES and (run_dir / SAMPLES_DIR) not in p.parents]
    stage_rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    out = [Figure(p, *caption(p.stem)) for p in found]
    split_rank = {"heard": 1, "unheard": 2, "train": 3}  # held-out identities before training ones

    def order(f: Figure) -> tuple:
        tokens = f.path.stem.split("_")
        split = next((split_rank[t] for t in reversed(tokens) if t in split_rank), 0)
        return stage_rank.get(tokens[0], 50), "_".join(t for t in tokens if t not in split_rank), split

    return sorted(out, key=order)


@dataclass
class Clip:
    title: str
    audio: Path | None
    frames: list[Path] = field(default_factory=list)
    teacher: list[float] | None = None
    student: list[float] | None = None
    emotions: list[str] = field(default_factory=list)


def gallery_clips(run_dir: Path, problems: Problems) -> list[Clip]:
    """The gallery's clips: from ``samples.json`` when the callback wrote one (audio, face frames and
    both distributions), else every audio file in plots/samples/ (older runs)."""
    folder = run_dir / SAMPLES_DIR
    if not folder.is_dir():
        return []
    text = read_text(run_dir, SAMPLES_DIR / "samples.json", problems)
    if text is not None:
        try:
            return [_clip(run_dir, folder, s) for s in json.loads(text)["samples"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exn:
            problems.add(folder / "samples.json", exn)
    return [Clip(p.stem, p) for p in run_files(run_dir, problems, f"{SAMPLES_DIR.as_posix()}/*") if p.suffix.lower() in AUDIO_SUFFIXES]


def _clip(run_dir: Path, folder: Path, sample: Mapping[str, Any]) -> Clip:
    def named(name: Any) -> Path | None:  # names come from a file of the run: never one outside it
        return folder / str(name) if name and inside(folder / str(name), run_dir) else None

    frames = [p for p in map(named, sample.get("frames") or []) if p]
    return Clip(str(sample.get("title") or sample.get("key") or "clip"), named(sample.get("audio")), frames,
                _floats(sample.get("teacher")), _floats(sample.get("student")), [str(e) for e in sample.get("emotions") or []])


def _floats(values: Any) -> list[float] | None:
    if not isinstance(values, list):
        return None
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def model_cards(run_dir: Path, problems: Problems) -> list[tuple[Path, dict[str, Any]]]:
    """The JSON header (model card) of each model file the run wrote; weights are not loaded."""
    from crossmodal.models.modelfile import read_header

    cards = []
    for path in run_files(run_dir, problems, "*.safetensors", "checkpoints/*.safetensors"):
        try:
            cards.append((path, read_header(path)))
        except (OSError, ValueError) as exn:
            problems.add(path, exn)
    return cards
