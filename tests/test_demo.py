"""The README shows what `make demo` prints, and both read the figures recorded in one file.

``crossmodal/assets/recorded.json`` (entry ``demo``) holds the figures a fresh run of the current code
prints and how far a run may move from them (measured in experiments/demo/README.md). These fast
tests check that README.md's demo block is exactly what the demo prints for those figures; the slow
``make demo`` test in tests/test_readme.py runs the demo and checks its figures against them. A code
change that moves the demo's figures therefore fails the slow test until recorded.json is updated, and
an updated recorded.json fails these tests until the README shows the new output.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from crossmodal.emotions import EMOTIONS
from crossmodal.tasks import demo

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_RUN_DIR = "logs/demo/runs/<time>"  # the run folder as the README shows it


def readme_demo_block() -> list[str]:
    """The lines of README.md's demo output block after its ``$ make demo`` line."""
    match = re.search(r"^```text\n\$ make demo[^\n]*\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    assert match, "README.md has no ```text block starting with `$ make demo`: the demo's printed output goes there"
    return match.group(1).rstrip("\n").split("\n")


def _recorded() -> dict:
    recorded = demo.recorded_figures()
    assert recorded.get("demo", {}).get("figures"), f"{demo.RECORDED} has no demo entry with figures"
    return recorded


def _classes() -> list[str]:
    from crossmodal.run import _compose

    return list(_compose([], []).model.label_classes)


def test_recorded_demo_entry_is_complete():
    entry = _recorded()["demo"]
    demo.compare_with_recorded({}, _recorded())  # every recorded key is a figure the demo prints
    for key in ("test/ua_unheard", "test/wa_unheard", "test/auc_heard/mean", "test/auc_unheard/mean"):
        assert key in entry["figures"], f"recorded.json demo.figures lacks {key}"
    assert set(entry["tolerance"]) == set(demo.DEMO_FIGURES.values())
    assert all(0 <= entry["measured"][group] <= value < 0.5 for group, value in entry["tolerance"].items())
    assert all(0 <= value <= 1 for value in entry["figures"].values())
    assert entry["source"].startswith("experiments/demo/README.md") and entry["commit"]


def test_readme_demo_block_is_what_the_demo_prints_for_the_recorded_figures():
    """Line for line: the README's block = the demo's summary for the recorded figures (so a run whose
    figures equal the recorded ones prints exactly the README's block, bar the run folder)."""
    recorded = _recorded()
    printed = demo.summary_text(recorded["demo"]["figures"], recorded, _classes(), README_RUN_DIR).split("\n")
    assert printed[0] == ""  # the demo starts its summary with an empty line after the trainer's output
    shown = readme_demo_block()
    for n, (want, got) in enumerate(zip(printed[1:], shown), start=1):
        assert got == want, (f"README.md demo block line {n} is not what the demo prints for the figures in "
                             f"crossmodal/assets/recorded.json (demo):\n  README: {got}\n  prints: {want}\n"
                             "Run `make demo` and copy its summary into README.md, and its figures into recorded.json")
    assert len(shown) == len(printed) - 1, "README.md demo block and the demo's summary differ in length"


def test_readme_demo_figures_are_the_recorded_ones():
    """The same check by figure, with a message naming the figure: the AUC table and the UA row."""
    figures = _recorded()["demo"]["figures"]
    shown: dict[str, str] = {}
    for line in readme_demo_block():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in (*EMOTIONS, "mean", "mean_paper"):
            shown[f"test/auc_heard/{cells[0]}"], shown[f"test/auc_unheard/{cells[0]}"] = cells[1], cells[2]
        if cells[0] == "distilled student (this run)":
            shown["test/ua_unheard"] = cells[1]
    for key, value in figures.items():
        if key == "test/wa_unheard":
            continue  # recorded, not in the printed table
        assert shown.get(key) == f"{value:.4f}", f"README.md demo block shows {key} = {shown.get(key)!r}, recorded.json has {value:.4f}"


def test_readme_says_how_far_the_demo_moves():
    tolerance = _recorded()["demo"]["tolerance"]
    text = " ".join(README.read_text().split())
    for group in ("ua", "auc_mean"):
        assert f"±{tolerance[group]:.2f}" in text or f"± {tolerance[group]:.2f}" in text, \
            f"README.md should say how far the demo's {group.upper()} may move: ±{tolerance[group]:.2f} (recorded.json demo.tolerance)"


def test_compare_with_recorded_flags_a_figure_outside_the_tolerance():
    recorded = {"demo": {"figures": {"test/ua_unheard": 0.5, "test/auc_unheard/mean": 0.8},
                         "tolerance": {"ua": 0.02, "auc_mean": 0.01, "auc": 0.1, "wa": 0.02}}}
    rows = dict((k, (got, want, tol)) for k, got, want, tol in
                demo.compare_with_recorded({"test/ua_unheard": 0.515, "test/auc_unheard/mean": 0.82}, recorded))
    assert rows == {"test/ua_unheard": (0.515, 0.5, 0.02), "test/auc_unheard/mean": (0.82, 0.8, 0.01)}
    line = demo.recorded_line({"test/ua_unheard": 0.515, "test/auc_unheard/mean": 0.82}, recorded)
    assert "UA 0.5150 vs 0.5000 +/- 0.0200 (within)" in line and "AUC unheard mean 0.8200 vs 0.8000 +/- 0.0100 (OUTSIDE)" in line
    missing = demo.compare_with_recorded({}, recorded)
    assert all(math.isnan(got) for _, got, _, _ in missing)
    with pytest.raises(ValueError, match="recorded.json: demo.figures has 'test/loss'"):
        demo.compare_with_recorded({}, {"demo": {"figures": {"test/loss": 1.0}, "tolerance": {}}})
    assert "no demo entry" in demo.recorded_line({}, {})
