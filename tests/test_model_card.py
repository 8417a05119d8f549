"""The shipped student's model card, `crossmodal predict --about`, and the demo's cross-validated line.

The card (crossmodal/assets/student_cpu.md) is rendered from crossmodal/assets/recorded.json and the
shipped file's header by one function; the committed file must be that rendering, so a figure lives
in recorded.json only.
"""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import pytest
import torch

from crossmodal.cli import main as cli_main
from crossmodal.models import card
from crossmodal.models.modelfile import read_header

EMODB_SPEAKERS = {"03", "08", "09", "10", "11", "12", "13", "14", "15", "16"}
CV_KEYS = {"ua_mean", "ci95", "interval", "folds", "seeds", "runs", "emotions", "protocol", "source"}


def test_committed_card_is_what_recorded_json_renders():
    committed = card.SHIPPED_CARD.read_text()
    rendered = card.shipped_card()
    assert committed == rendered, (f"{card.SHIPPED_CARD} is not the rendering of crossmodal/assets/recorded.json: "
                                   f"run `{card.WRITE_COMMAND}` and commit the card")


def test_recorded_cv_entries_and_speakers():
    recorded = card.load_recorded()
    for name in card.CV_ENTRIES:
        cv = recorded[name]["cv"]
        assert CV_KEYS <= set(cv), f"recorded.json {name}.cv lacks {sorted(CV_KEYS - set(cv))}"
        assert cv["emotions"] == 6 and cv["source"] == card.CV_SOURCE and "t over folds" in cv["interval"]
        assert all(isinstance(cv[k], int) and cv[k] >= 0 for k in ("folds", "runs"))
        seed_free = cv["interval"].startswith("t over folds (")  # the baselines do not depend on the seed
        assert cv["seeds"] is None if seed_free else isinstance(cv["seeds"], int) and cv["seeds"] >= 1
        if cv["runs"]:
            lo, hi = cv["ci95"]
            assert 0 <= lo <= cv["ua_mean"] <= hi <= 1, f"recorded.json {name}.cv: mean outside its interval"
        else:
            assert cv["ua_mean"] is None and cv["ci95"] is None
    student = recorded["student_cpu"]
    held, trained = set(student["heldout_speakers"]), set(student["trained_speakers"])
    assert held == {"10", "12"} and held | trained == EMODB_SPEAKERS and not held & trained
    header = read_header(card.SHIPPED_STUDENT)
    speakers = header.get("info", {}).get("train_speakers") or header["provenance"]["train_speakers"]  # written by a v1 upgrade / a run
    assert sorted(speakers["emodb"]) == sorted(trained), "the shipped file trained on other speakers than recorded"


def test_about_prints_the_shipped_card_without_an_input(capsys):
    assert cli_main(["predict", "--about"]) == 0
    out = capsys.readouterr().out
    assert out == card.SHIPPED_CARD.read_text()
    cv = card.load_recorded()["student_cpu"]["cv"]
    for text in ("German acted speech", "**Not English**", "Not for in-the-wild speech", "never an EmoDB label",
                 "speakers **10, 12** were held out", card.format_cv(cv), "chance (any constant guess) | 0.167"):
        assert text in out, f"the shipped card lacks {text!r}"
    assert cli_main(["predict", "--about", "--ckpt", str(card.SHIPPED_STUDENT)]) == 0  # the same file named


def test_about_on_another_student_renders_its_header(tmp_path, capsys):
    from crossmodal.models.speech import create_student, save_student

    net = create_student("small_cnn", channels=[4, 8, 8, 8], embed_dim=8, n_freq=32)
    path = save_student(tmp_path / "mine.safetensors", "small_cnn", {"channels": [4, 8, 8, 8], "embed_dim": 8, "n_freq": 32},
                        {"features": "logmel", "n_mels": 32, "sample_rate": 16000}, net.state_dict(),
                        extra={"train_speakers": {"ravdess": ["Actor_01", "Actor_02"]}},
                        provenance={"run": "experiment=distill_cpu seed=7", "data": "my pairs", "metrics": {"test/ua_unheard": 0.4321, "test/loss": 1.0}})
    assert cli_main(["predict", "--about", "--ckpt", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Model card: mine.safetensors")
    for text in ("`small_cnn`", "32 log-mel bands", "experiment=distill_cpu seed=7", "my pairs", "ravdess: Actor_01, Actor_02",
                 "`test/ua_unheard` | 0.4321", "No cross-validated figures are recorded for this file"):
        assert text in out, f"the card of a user's file lacks {text!r}"
    assert "test/loss" not in out and "German" not in out


def test_about_refuses_what_is_not_a_student(tmp_path, capsys):
    assert cli_main(["predict", "--about", "--ckpt", str(card.ASSETS / "teacher_cpu.safetensors")]) == 2
    assert "is a teacher file; --about describes speech students" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a model")
    assert cli_main(["predict", "--about", "--ckpt", str(tmp_path / "notes.txt")]) == 2
    assert "--about reads the card in a student model file's header" in capsys.readouterr().err
    assert cli_main(["predict"]) == 2
    assert "needs at least one PATH (or --about" in capsys.readouterr().err


SUMMARY = {  # the shape of experiments/cpu_transfer/cv_summary.py's cv_summary.json (full study)
    "classes": ["neutral", "happiness", "sadness", "anger", "disgust", "fear"], "folds": [0, 1, 2, 3, 4], "seeds": [0, 1, 2],
    "rows": {name: {"runs": runs, "mean": mean, "t_low": mean - 0.05, "t_high": mean + 0.05, "boot_low": mean - 0.1,
                    "boot_high": mean + 0.1, "note": ""}
             for name, runs, mean in (("distilled", 15, 0.55), ("supervised", 15, 0.6), ("egemaps", 5, 0.62), ("mfcc", 5, 0.58), ("chance", 5, 1 / 6))},
    "ratio": {"ratio_of_means": 0.9167, "mean_of_ratios": 0.92, "t_low": 0.85, "t_high": 0.99, "pairs": 15},
}


def test_a_study_summary_becomes_the_cv_entries_and_the_card():
    recorded = card.load_recorded()
    updated = card.with_cv(recorded, SUMMARY)
    for name in recorded:  # every other key kept as it was
        assert {k: v for k, v in updated[name].items() if k != "cv"} == {k: v for k, v in recorded[name].items() if k != "cv"}
    cv = updated["student_cpu"]["cv"]
    assert (cv["ua_mean"], cv["ci95"], cv["folds"], cv["seeds"], cv["runs"]) == (0.55, [0.5, 0.6], 5, 3, 15)
    assert cv["ratio_to_supervised"]["ci95"] == [0.85, 0.99] and updated["egemaps_lr"]["cv"]["interval"].startswith("t over folds (")
    assert card.format_cv(cv) == "0.550, 95 % interval [0.500, 0.600] (5 folds x 3 seeds, 15 runs)"
    assert card.study_status(cv) == ""
    text = card.render_shipped_card(updated, read_header(card.SHIPPED_STUDENT))
    assert "Partial study" not in text and "Distilled / supervised: 0.917, 95 % interval [0.850, 0.990]" in text
    assert "eGeMAPS+LR, which needs labels, scores higher (0.620 against 0.550 UA)" in text
    assert card.dump_recorded(recorded) == card.RECORDED.read_text()  # the writer keeps the file's layout
    with pytest.raises(ValueError, match="cv_summary.json has no row 'distilled'"):
        card.cv_entry({"rows": {}}, "distilled")


def test_partial_or_missing_figures_say_so():
    assert card.format_cv(None) == "not measured yet"
    one = {"ua_mean": 0.3936, "ci95": [0.3936, 0.3936], "folds": 1, "seeds": 1, "runs": 1}
    assert card.format_cv(one) == "0.394 (one run, 1 fold x 1 seed: no interval yet)"
    assert card.study_status(one).startswith("**Partial study**: 1 of 5 folds x 1 of 3 seeds")


def test_demo_summary_line_sets_this_run_beside_the_cross_validated_figure():
    from crossmodal.tasks import demo

    recorded = card.with_cv(card.load_recorded(), SUMMARY)
    line = demo.cv_line({"test/ua_unheard": 0.4451}, recorded)
    assert line == ("held-out UA, this run vs the recipe cross-validated (distill_cpu over EmoDB speaker folds, "
                    "crossmodal/assets/recorded.json): 0.4451 vs 0.550, 95 % interval [0.500, 0.600] (5 folds x 3 seeds, 15 runs)")
    assert line in demo.summary_text({"test/ua_unheard": 0.4451}, recorded, ["neutral", "anger"], "run").split("\n")
    assert demo.cv_line({}, {}).endswith("n/a vs not measured yet")


def test_eval_emodb_with_the_shipped_student_scores_only_its_held_out_speakers():
    """experiment=eval_emodb's speaker filter, on the shipped EmoDB clips and the shipped student's own info."""
    from crossmodal.io.corpora import read_corpus
    from crossmodal.models.loading import load_student_modules
    from crossmodal.tasks.evaluate import drop_student_speakers

    clips = read_corpus("emodb", card.ASSETS / "demo" / "emodb")
    assert {c.speaker for c in clips} == EMODB_SPEAKERS
    _frontend, _net, info = load_student_modules(card.SHIPPED_STUDENT)
    kept, note = drop_student_speakers(clips, info, "emodb", exclude=True)
    assert {c.speaker for c in kept} == set(card.load_recorded()["student_cpu"]["heldout_speakers"]) == {"10", "12"}
    assert note.startswith("scored only speakers 10, 12, which the student never heard; left out speakers 03, 08, 09, 11")


# --------------------------------------------------------------------------- provenance without machine paths

ABSOLUTE = re.compile(r"(?<![\w.:/~-])(?:/(?:[\w.+-]+/)+[\w.+-]*|[A-Za-z]:\\[^\s|`\"]+|~/[\w.+/-]+)")


def _strings(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _header_strings(path: Path):
    """Every string of a safetensors file's JSON header, the crossmodal card inside it decoded too."""
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    for text in _strings(header):
        yield text
        if text.startswith("{"):
            yield from _strings(json.loads(text))


def test_shipped_assets_hold_no_absolute_path():
    assets = card.ASSETS
    found = []
    for path in sorted(assets.rglob("*")):
        if path.suffix == ".safetensors":
            texts = list(_header_strings(path))
        elif path.suffix in (".md", ".json", ".csv", ".txt", ".yaml", ".yml"):
            texts = [path.read_text(encoding="utf-8")]
        else:
            continue
        for text in texts:
            if os.path.isabs(text):
                found.append(f"{path.relative_to(assets)}: {text}")
            found += [f"{path.relative_to(assets)}: {m}" for m in ABSOLUTE.findall(text)]
    assert found == [], f"absolute paths in crossmodal/assets (record paths relative to the project): {found[:5]}"
    assert not ABSOLUTE.findall("see experiments/cpu_transfer/README.md, https://x.org/a/b, 1/1.6")
    assert ABSOLUTE.findall("trained by /work/abl/shiprun;") == ["/work/abl/shiprun"]


def test_model_files_are_written_without_machine_paths(tmp_path, monkeypatch):
    from crossmodal.models.modelfile import portable_paths, write_model_file

    monkeypatch.chdir(tmp_path)
    root = Path(card.__file__).resolve().parents[2]
    provenance = {"run": "/somewhere/else/runs/2026-12-02_10-00-00", "data": str(root / "data" / "distill" / "x-1234"),
                  "nested": {"checkpoint": str(tmp_path / "ckpt" / "last.ckpt")}, "teacher": "teacher_cpu",
                  "note": "experiment=distill_cpu seed=0"}
    out = write_model_file(tmp_path / "s.safetensors", {"kind": "student", "architecture": {"name": "small_cnn"},
                                                          "provenance": provenance, "info": {"data": "/abs/pairs"}},
                           {"w": torch.zeros(2)})
    header = read_header(out)
    assert header["provenance"]["run"] == "2026-12-02_10-00-00"  # outside the project: its name only
    assert header["provenance"]["data"] == "data/distill/x-1234"  # inside: relative to the checkout
    assert header["provenance"]["nested"]["checkpoint"] == "ckpt/last.ckpt"  # relative to the working folder
    assert header["provenance"]["teacher"] == "teacher_cpu" and header["provenance"]["note"] == "experiment=distill_cpu seed=0"
    assert header["info"]["data"] == "pairs"
    assert not [t for t in _header_strings(out) if os.path.isabs(t) or ABSOLUTE.findall(t)]
    assert portable_paths("FER+ train, 25,045 images") == "FER+ train, 25,045 images"
