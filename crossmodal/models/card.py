"""Model cards: what a student file is, what it was trained on, how it was judged, what it is not.

    crossmodal predict --about [--ckpt FILE]            # prints the card (about(path))
    python -m crossmodal.models.card --write            # re-renders crossmodal/assets/student_cpu.md
    python -m crossmodal.models.card --cv-summary SWEEP/cv_summary.json   # new CV figures -> recorded.json + card

The shipped student's card is rendered from its file's header (read without loading a weight) and
``crossmodal/assets/recorded.json`` (every figure); ``crossmodal/assets/student_cpu.md`` is that
rendering, committed, and tested to be current. Any other student file gets a card from its own header.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path
from typing import Any

from crossmodal.models.modelfile import (
    ModelFileError,
    file_digest,
    header_facts,
    is_safetensors,
    portable_paths,
    read_header,
)
from crossmodal.utils.atomic import write_text
from crossmodal.utils.figures import markdown_table

ASSETS = Path(__file__).resolve().parents[1] / "assets"
RECORDED = ASSETS / "recorded.json"
SHIPPED_STUDENT = ASSETS / "student_cpu.safetensors"
SHIPPED_CARD = ASSETS / "student_cpu.md"
WRITE_COMMAND = "python -m crossmodal.models.card --write"
UPDATE_COMMAND = "python -m crossmodal.models.card --cv-summary SWEEP/cv_summary.json"

# recorded.json entry -> (row of experiments/cpu_transfer/cv_summary.py's cv_summary.json, title on the card)
CV_ENTRIES = {
    "student_cpu": ("distilled", "distilled student (`distill_cpu`): FER+ teacher only, no EmoDB label"),
    "supervised_cpu": ("supervised", "supervised student (`supervised_cpu`): same network, EmoDB labels"),
    "egemaps_lr": ("egemaps", "eGeMAPSv02 functionals + logistic regression (EmoDB labels)"),
    "mfcc_lr": ("mfcc", "MFCC functionals + logistic regression (EmoDB labels)"),
}
STUDY_FOLDS, STUDY_SEEDS = 5, 3  # the protocol's size (experiments/cpu_transfer/README.md)
CV_SOURCE = "experiments/cpu_transfer/README.md"
CV_PROTOCOL = ("5 speaker folds of EmoDB (2 test speakers each, never heard; the other 8 train, 1 of them kept "
               "whole for model selection), every row on the same folds; UA = unweighted average recall over the "
               "6 emotions EmoDB shares with FER+ (neutral, happiness, sadness, anger, disgust, fear)")


def load_recorded(path: str | Path = RECORDED) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: the recorded figures ship with crossmodal (reinstall it)") from None
    except json.JSONDecodeError as exn:
        raise ValueError(f"{path} is not valid JSON ({exn}); restore it with `git checkout {path.name}`") from exn


def cv_entry(summary: dict[str, Any], row: str) -> dict[str, Any]:
    """The ``cv`` object of recorded.json for one row of a cv_summary.json (t-interval over the runs)."""
    rows = summary.get("rows") or {}
    if row not in rows:
        raise ValueError(f"cv_summary.json has no row {row!r} (rows: {', '.join(rows)}): is it from experiments/cpu_transfer/cv_summary.py?")
    data = rows[row]
    runs = int(data.get("runs") or 0)
    seed_free = row in ("egemaps", "mfcc", "chance")
    entry: dict[str, Any] = {
        "ua_mean": _round(data.get("mean")) if runs else None,
        "ci95": [_round(data.get("t_low")), _round(data.get("t_high"))] if runs else None,
        "interval": "t over folds (deterministic given the fold)" if seed_free else "t over folds x seeds",
        "ci95_speaker_bootstrap": [_round(data.get("boot_low")), _round(data.get("boot_high"))] if runs else None,
        "folds": len(summary.get("folds") or []), "seeds": None if seed_free else len(summary.get("seeds") or []), "runs": runs,
        "emotions": len(summary.get("classes") or []), "protocol": CV_PROTOCOL, "source": CV_SOURCE,
    }
    if row == "distilled" and summary.get("ratio"):
        ratio = summary["ratio"]
        entry["ratio_to_supervised"] = {"mean": _round(ratio["ratio_of_means"]), "ci95": [_round(ratio["t_low"]), _round(ratio["t_high"])],
                                        "interval": "t over paired (fold, seed) ratios"}
    if data.get("note"):
        entry["note"] = data["note"]
    return entry


def with_cv(recorded: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """recorded.json with the ``cv`` objects replaced by those of ``summary``; every other key kept."""
    updated = json.loads(json.dumps(recorded))
    for name, (row, _title) in CV_ENTRIES.items():
        updated.setdefault(name, {})["cv"] = cv_entry(summary, row)
    return updated


def dump_recorded(recorded: dict[str, Any]) -> str:
    """recorded.json's layout: one entry per line (as experiments/demo/record.py writes it)."""
    return "{\n" + ",\n".join(f" {json.dumps(key)}: {json.dumps(value)}" for key, value in recorded.items()) + "\n}\n"


def _round(value: Any) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else round(float(value), 6)


def format_cv(cv: dict[str, Any] | None) -> str:
    """``0.523, 95 % interval [0.48, 0.57] (5 folds x 3 seeds)``; says so when nothing is measured yet."""
    if not cv or cv.get("ua_mean") is None:
        return "not measured yet"
    runs = int(cv.get("runs") or 0)
    size = f"{cv.get('folds')} fold{'s' if cv.get('folds') != 1 else ''}"
    if cv.get("seeds") is not None:  # None: a row that does not depend on the seed (the baselines)
        size += f" x {cv['seeds']} seed{'s' if cv['seeds'] != 1 else ''}"
    if runs < 2 or not cv.get("ci95") or None in cv["ci95"]:
        return f"{cv['ua_mean']:.3f} (one run, {size}: no interval yet)"
    lo, hi = cv["ci95"]
    return f"{cv['ua_mean']:.3f}, 95 % interval [{lo:.3f}, {hi:.3f}] ({size}, {runs} runs)"


def study_status(cv: dict[str, Any] | None) -> str:
    """'' for the full study; a warning line while fewer folds or seeds than the protocol's are in."""
    if not cv:
        return "No cross-validated figures are recorded yet."
    folds, seeds = int(cv.get("folds") or 0), int(cv.get("seeds") or 0)
    if folds >= STUDY_FOLDS and seeds >= STUDY_SEEDS:
        return ""
    return (f"**Partial study**: {folds} of {STUDY_FOLDS} folds x {seeds} of {STUDY_SEEDS} seeds so far; "
            "these figures are preliminary and will be replaced by the full study's.")


def _frontend(frontend: dict[str, Any]) -> str:
    if not frontend:
        return "not recorded"
    kind = frontend.get("features", "spectrogram")
    bands = f"{frontend['n_mels']} log-mel bands" if kind == "logmel" and "n_mels" in frontend else f"{kind} (n_fft {frontend.get('n_fft', '?')})"
    parts = [bands, f"{frontend.get('win_ms', '?')} ms windows every {frontend.get('hop_ms', '?')} ms",
             f"{int(frontend.get('sample_rate', 16000)) // 1000} kHz mono input"]
    if frontend.get("normalize"):
        parts.append("per-utterance normalisation")
    if frontend.get("n_time_masks") or frontend.get("n_freq_masks"):
        parts.append("SpecAugment while training")
    return ", ".join(parts)


def _network_rows(header: dict[str, Any], path: Path, shown_path: str) -> list[list[str]]:
    from safetensors import safe_open

    architecture = header.get("architecture") or {}
    params = None
    if is_safetensors(path):  # the number of weights, from the safetensors header (no tensor is read)
        with safe_open(str(path), framework="pt") as f:
            params = sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    emotions = header.get("emotions") or []
    provenance = header.get("provenance") or {}
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted((architecture.get("kwargs") or {}).items())) or "defaults"
    return [
        ["file", f"`{shown_path}` (sha256 {file_digest(path, 16)}...)"],
        ["network", f"`{architecture.get('name')}` ({kwargs})"
                    + (f", {params / 1e6:.2f} M weights" if params else "")],
        ["front-end", _frontend(header.get("frontend") or {})],
        ["output", f"a distribution over {len(emotions)} emotions in FER+ order ({', '.join(emotions)}) and the penultimate-layer embedding"],
        ["trained by", f"{portable_paths(provenance.get('run')) or 'not recorded'}; commit {str(provenance.get('git_commit') or 'not recorded')[:10]}, {provenance.get('date') or 'date not recorded'}"],
    ]


def _speakers(values: Any) -> str:
    return ", ".join(str(v) for v in values or [])


def render_shipped_card(recorded: dict[str, Any], header: dict[str, Any], path: Path = SHIPPED_STUDENT) -> str:
    """The shipped student's card (Markdown): figures from ``recorded`` only, the rest from ``header``."""
    entry = recorded.get("student_cpu") or {}
    for key in ("heldout_speakers", "trained_speakers", "ua_unheard", "agreement"):
        if key not in entry:
            raise ValueError(f"{RECORDED}: student_cpu.{key} is missing; the shipped student's card needs it")
    heard = sorted(str(s) for s in (header_facts(header).get("train_speakers") or {}).get("emodb", []))
    if heard and heard != sorted(entry["trained_speakers"]):
        raise ValueError(f"{RECORDED}: student_cpu.trained_speakers {entry['trained_speakers']} differ from the speakers "
                         f"{path} records (train_speakers.emodb {heard}): record the file that ships")
    teacher = recorded.get("teacher_cpu") or {}
    cv = entry.get("cv")
    held = _speakers(entry["heldout_speakers"])
    lines = [
        "# Model card: the shipped speech-emotion student",
        "",
        f"<!-- Rendered by `{WRITE_COMMAND}` from crossmodal/assets/recorded.json and the file's header. "
        "Do not edit by hand: a test compares this file with the rendering. -->",
        "",
        markdown_table(["", ""], _network_rows(header, path, "crossmodal/assets/student_cpu.safetensors")),
        "",
        "## What it was trained on",
        "",
        f"- **German acted speech**: EmoDB (Berlin Database of Emotional Speech), actors reading German sentences "
        f"in a studio. {len(entry['trained_speakers'])} of its 10 speakers ({_speakers(entry['trained_speakers'])}); "
        f"speakers **{held}** were held out entirely and never heard.",
        "- **Pseudo-paired with FER+ faces, never an EmoDB label as a target**: each clip was paired with FER+ face "
        "images (other people, never recorded with the voice) showing the clip's acted emotion; the shipped CPU "
        f"teacher (FER+ test accuracy {teacher.get('ferplus_test_acc', 'n/a')}) labelled every face, and the student "
        "learnt the teacher's softened predictions from the voice alone (`experiment=distill_cpu`). The acted "
        "emotion chose which faces a clip was paired with; no EmoDB label was a training target or chose the checkpoint.",
        f"- **Face-voice agreement p = {entry['agreement']:g}** (`data.prepare.agreement`): the share of each speaker's "
        "clips whose faces show the clip's emotion, the rest drawn from an in-the-wild prior. p = 1 is the ideal case; "
        "in talking-face video faces often disagree with the voice (experiments/agreement/README.md: the transfer at lower p).",
        "",
        "## How it was judged",
        "",
        f"Cross-validated: {CV_PROTOCOL}. The figures judge the recipe (`experiment=distill_cpu`), re-trained in "
        "every fold, beside what a practitioner would use instead. Mean UA with a 95 % t-interval; "
        f"the speaker bootstrap is in {CV_SOURCE}.",
        "",
    ]
    status = study_status(cv)
    if status:
        lines += [status, ""]
    n_emotions = int((cv or {}).get("emotions") or 6)
    rows = [[title, format_cv((recorded.get(name) or {}).get("cv"))] for name, (_row, title) in CV_ENTRIES.items()]
    rows.append(["chance (any constant guess)", f"{1 / n_emotions:.3f}"])
    lines += [markdown_table(["model", f"UA over {n_emotions} emotions, cross-validated"], rows), ""]
    ratio = (cv or {}).get("ratio_to_supervised")
    if ratio:
        lines += [f"Distilled / supervised: {ratio['mean']:.3f}, 95 % interval [{ratio['ci95'][0]:.3f}, {ratio['ci95'][1]:.3f}] "
                  f"({ratio.get('interval', '')}).", ""]
    lines += [
        f"**This file on its own held-out speakers ({held})**: UA {entry['ua_unheard']:.4f}"
        + (f", WA {entry['wa_unheard']:.4f}" if "wa_unheard" in entry else "")
        + f" (one run, {entry.get('source', 'n/a')}). Two speakers and one run move with the seed: "
        "the cross-validated figure above, over all 10 speakers and several seeds, is the one to read.",
        "",
        f"`python -m crossmodal.run experiment=eval_emodb benchmark.source=path/to/emodb` with this student scores only "
        f"speakers {held} (the ones it never heard) and names them in its report.",
        "",
        "## What it is not",
        "",
        "- **Not for in-the-wild speech**: it heard acted, read sentences recorded in a studio by 8 people; "
        "spontaneous speech, phone lines, noise, children and far-field microphones are untested.",
        "- **Not English**: it heard German only; other languages are untested.",
        "- **Acted emotions**: actors' portrayals are clearer than everyday emotion.",
        "- **6 of its 8 outputs judged**: neutral, happiness, sadness, anger, disgust and fear; EmoDB has no "
        "surprise or contempt, so those two outputs were never checked (and EmoDB's boredom has no output).",
        "- **Not a decision-maker about people**: not for hiring, health, security or lie detection.",
        "",
        "## Intended use",
        "",
        "A small CPU model showing what cross-modal distillation learns without audio labels: demos, teaching, "
        "a check of the pipeline, and a starting point for research (its embedding can be probed or fine-tuned). "
        "A user who has emotion labels for their own speech should compare with the labelled baselines above "
        "(`experiment=eval_<corpus>` reports them)." + _against_baseline(recorded),
        "",
        "---",
        f"Figures: crossmodal/assets/recorded.json (entries student_cpu, supervised_cpu, egemaps_lr, mfcc_lr). "
        f"Re-render after a change: `{WRITE_COMMAND}`; take a finished study's figures: `{UPDATE_COMMAND}`.",
    ]
    return "\n".join(lines) + "\n"


def _against_baseline(recorded: dict[str, Any]) -> str:
    """One sentence on where the distilled student stands against eGeMAPS+LR, from the recorded figures."""
    student = ((recorded.get("student_cpu") or {}).get("cv") or {}).get("ua_mean")
    egemaps = ((recorded.get("egemaps_lr") or {}).get("cv") or {}).get("ua_mean")
    if student is None or egemaps is None:
        return ""
    if student < egemaps:
        return f" On EmoDB today eGeMAPS+LR, which needs labels, scores higher ({egemaps:.3f} against {student:.3f} UA)."
    return f" On EmoDB its mean UA is at or above eGeMAPS+LR's without a label ({student:.3f} against {egemaps:.3f})."


def shipped_card() -> str:
    return render_shipped_card(load_recorded(), read_header(SHIPPED_STUDENT))


def render_file_card(header: dict[str, Any], path: Path) -> str:
    """A card from a student file's own header: network, front-end, provenance, speakers, metrics."""
    info, provenance = header.get("info") or {}, header.get("provenance") or {}
    rows = _network_rows(header, path, str(path))
    rows.append(["training data", f"{provenance.get('data') or info.get('data') or 'not recorded'}"
                 + (" (synthetic pseudo-pairs: face and voice never recorded together)" if info.get("synthetic") or provenance.get("synthetic") else "")])
    if provenance.get("teacher") or provenance.get("teacher_digest"):
        rows.append(["teacher", f"{provenance.get('teacher') or 'not named'} ({provenance.get('teacher_digest') or 'no digest'})"])
    facts = header_facts(header)
    for key, title in (("train_speakers", "trained on speakers"), ("heldout_speakers", "held-out speakers"), ("unheard_speakers", "held-out speakers")):
        value = facts.get(key)
        if isinstance(value, dict):
            rows.append([title, "; ".join(f"{corpus}: {_speakers(v)}" for corpus, v in sorted(value.items()))])
        elif value:
            rows.append([title, _speakers(value)])
    if provenance.get("migrated_from") or provenance.get("upgraded_from"):
        rows.append(["format", f"written as {provenance.get('migrated_from') or (provenance.get('upgraded_from') or {}).get('format_version')}, read through the tested migrations"])
    lines = [f"# Model card: {path.name}", "", markdown_table(["", ""], rows), ""]
    metrics = {k: v for k, v in (provenance.get("metrics") or info.get("metrics") or {}).items()
               if isinstance(v, (int, float)) and k.split("/")[-1] in ("ua_unheard", "wa_unheard", "ua_heard", "wa_heard", "mean")}
    if metrics:
        lines += ["Figures its run recorded (one run, one split):", "",
                  markdown_table(["metric", "value"], [[f"`{k}`", f"{v:.4f}"] for k, v in sorted(metrics.items())]), ""]
    else:
        lines += ["Its run recorded no test figures.", ""]
    lines += ["No cross-validated figures are recorded for this file: they exist for the shipped student only "
              "(`crossmodal predict --about`). To judge a recipe, run it over the speaker folds: "
              "`python -m crossmodal.run -m hparams_search=cpu_transfer_cv` (experiments/cpu_transfer/README.md)."]
    return "\n".join(lines) + "\n"


def about(path: str | Path | None = None) -> str:
    """The card ``crossmodal predict --about`` prints: the shipped card for the shipped file, else the file's own."""
    if path is None:
        path = os.environ.get("CROSSMODAL_STUDENT") or SHIPPED_STUDENT
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"student file {path} does not exist (--ckpt / $CROSSMODAL_STUDENT)")
    if path.resolve() == SHIPPED_STUDENT.resolve():
        return shipped_card()
    try:
        header = read_header(path)
    except ModelFileError as exn:
        raise ModelFileError(f"{exn}. --about reads the card in a student model file's header; a Lightning "
                             "checkpoint has none: its run folder holds student.safetensors") from None
    if header.get("kind") != "student":
        raise ModelFileError(f"{path} is a {header.get('kind')} file; --about describes speech students")
    return render_file_card(header, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossmodal.models.card", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help=f"re-render {SHIPPED_CARD.name} from recorded.json")
    parser.add_argument("--cv-summary", type=Path, help="put this cv_summary.json's figures into recorded.json's cv entries, then re-render")
    args = parser.parse_args(argv)
    if args.cv_summary:
        if not args.cv_summary.exists():
            raise SystemExit(f"{args.cv_summary} does not exist: pass the cv_summary.json of experiments/cpu_transfer/cv_summary.py")
        recorded = with_cv(load_recorded(), json.loads(args.cv_summary.read_text()))
        write_text(RECORDED, dump_recorded(recorded))
        print(f"wrote the cv entries of {RECORDED}")
    if args.write or args.cv_summary:
        write_text(SHIPPED_CARD, shipped_card())
        print(f"wrote {SHIPPED_CARD}")
    else:
        print(shipped_card(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
