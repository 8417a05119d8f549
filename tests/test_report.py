"""report.html of a run folder and index.html of a sweep folder: every reference resolves, text is escaped."""
from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import soundfile as sf
from PIL import Image

from crossmodal.callbacks.gallery import write_samples
from crossmodal.cli import main as cli_main
from crossmodal.report import INDEX_NAME, REPORT_NAME, report_folder, write_report
from crossmodal.report.content import caption, metric_tables

ASSETS = Path(__file__).resolve().parents[1] / "crossmodal" / "assets"
VOICE = ASSETS / "demo" / "emodb" / "wav" / "03a01Fa.flac"
FACES = sorted((ASSETS / "demo" / "ferplus" / "FER2013Valid").glob("*.png"))[:3]


class Page(HTMLParser):
    """The references and text of a page."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.feed(path.read_text(encoding="utf-8"))
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.refs.append((tag, value))

    def handle_data(self, data):
        self.text.append(data)

    def unresolved(self, page: Path) -> list[str]:
        bad = []
        for _, ref in self.refs:
            url = urlparse(ref)
            if url.scheme or url.netloc or ref.startswith("/") or not (page.parent / unquote(url.path)).is_file():
                bad.append(ref)
        return bad


def _figure(path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=40)
    plt.close(fig)


def make_run_folder(run_dir: Path, name: str = "distill_cpu", overrides: list[str] | None = None, ua: float = 0.5) -> Path:
    """A distillation run folder as python -m crossmodal.run leaves it, written by hand from real files."""
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"task: train\nname: {name}\nseed: 0\nnote: '<script>alert(1)</script>'\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides or ["experiment=distill_cpu", "seed=0"]))
    (run_dir / "run.log").write_text("[2026-12-01 23:56:29,188][crossmodal][INFO] - start\n"
                                     "[2026-12-02 00:17:42,548][crossmodal][INFO] - run folder: here\n")
    metrics = {"test/auc_heard/anger": 0.87, "test/auc_unheard/anger": 0.8, "test/auc_heard/mean": 0.94,
               "test/auc_unheard/mean": 0.84, "test/ua_unheard": ua, "test/loss": 1.7, "test/loss_heard": 1.7,
               "lr-AdamW": 7.6e-06, "data/skipped": 0.0}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    for stem in ("test_roc_unheard", "val_confusion_heard", "curves_loss", "test_samples", "odd name #1"):
        _figure(run_dir / "plots" / f"{stem}.png", stem)
    (run_dir / "plots" / "val_auc_table.csv").write_text("emotion,heard,unheard\nanger,0.7278,0.7343\n")
    wave, rate = sf.read(VOICE, dtype="float32")
    assert rate == 16000
    faces = [np.asarray(Image.open(p).convert("L")) for p in FACES]
    rows = [{"key": "03_03a01Fa_s000", "title": "03a01Fa, acted: <happiness>", "frames": faces,
             "teacher": np.eye(8)[1] * 0.6 + 0.05, "student": np.full(8, 1 / 8)}]
    write_samples(run_dir / "plots" / "samples", rows, [wave[:16000]])
    (run_dir / "checkpoints").mkdir()
    shutil.copy(ASSETS / "student_cpu.safetensors", run_dir / "student.safetensors")
    return run_dir


def test_run_report_references_resolve_and_text_is_escaped(tmp_path):
    run_dir = make_run_folder(tmp_path / "run")
    page_path = write_report(run_dir)
    assert page_path == run_dir / REPORT_NAME
    page = Page(page_path)
    assert page.unresolved(page_path) == []
    kinds = {tag for tag, _ in page.refs}
    assert {"img", "audio", "a"} <= kinds
    images = [ref for tag, ref in page.refs if tag == "img"]
    # every figure and each face frame of the gallery; the gallery figure is a link, its cards show it
    assert len(images) == 4 + len(FACES) and "plots/test_samples.png" in [ref for tag, ref in page.refs if tag == "a"]
    assert [ref for tag, ref in page.refs if tag == "audio"] == ["plots/samples/03_03a01Fa_s000.flac"]
    assert "script" not in page.tags and "svg" in page.tags  # the config's text is shown, never run
    text = " ".join(page.text)
    assert "<script>alert(1)</script>" in text and "acted: <happiness>" in text
    for shown in ("ROC curves per emotion: unheard identities (test)", "Confusion matrix: heard identities (validation)",
                  "small_cnn", "experiment=distill_cpu", "0.84", "21 min"):
        assert shown in text, shown


def test_files_linking_outside_the_run_folder_are_never_read_or_linked(tmp_path):
    """plots/x.png -> a file outside the run (as /etc/passwd would be) is named as left out, not linked;
    a table that links out is not read; a Markdown file's raw HTML and links stay text."""
    run_dir = make_run_folder(tmp_path / "run")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwd.png").write_bytes((run_dir / "plots" / "curves_loss.png").read_bytes())
    (secret / "passwd.csv").write_text("user,hash\nroot,SECRET-HASH\n")
    os.symlink(secret / "passwd.png", run_dir / "plots" / "x.png")
    os.symlink(secret / "passwd.csv", run_dir / "plots" / "leak.csv")
    os.symlink(secret / "passwd.csv", run_dir / "notes.txt")
    os.symlink(secret, run_dir / "plots" / "linked_dir")  # a folder that links out: nothing below it either
    os.symlink(run_dir / "plots" / "curves_loss.png", run_dir / "plots" / "curves_alias.png")  # inside: fine
    (run_dir / "tables").mkdir()
    (run_dir / "tables" / "notes.md").write_text("| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | [x](javascript:alert(1)) |\n")
    page_path = write_report(run_dir)
    page = Page(page_path)
    assert page.unresolved(page_path) == []
    assert not [ref for _, ref in page.refs if "secret" in ref or "passwd" in ref or "x.png" in ref or "leak" in ref]
    assert "plots/curves_alias.png" in [ref for tag, ref in page.refs if tag == "img"]
    html = page_path.read_text()
    assert "SECRET-HASH" not in html and "javascript:" not in [ref for _, ref in page.refs]
    text = " ".join(page.text)
    for name in ("plots/x.png", "plots/leak.csv", "notes.txt"):
        assert f"{name}: links outside the run folder" in text, name
    assert "<img src=x onerror=alert(1)>" in text and "table" in page.tags  # the Markdown table, its HTML as text
    assert [ref for tag, ref in page.refs if tag == "img"].count("x") == 0


def test_captions_and_metric_tables():
    assert caption("test_roc_heard") == ("ROC curves per emotion: heard identities (test)", "roc")
    assert caption("curves_ua_unheard") == ("Training curves: UA (unweighted average recall), unheard identities", "curves")
    assert caption("extract_dominant_emotion") == ("Dominant emotion counts (extraction)", "dominant")
    tables = {t.title: t for t in metric_tables({"test/auc_heard/anger": 0.9, "test/auc_unheard/anger": 0.8,
                                                 "test/ua_heard": 0.5, "test/loss": 1.0, "lr": 0.1})}
    assert tables["test / auc"].columns == ["name", "heard", "unheard"] and tables["test / auc"].rows == [["anger", 0.9, 0.8]]
    assert tables["test"].rows == [["ua", None, 0.5], ["loss", 1.0, None]] and tables["test"].columns == ["name", "value", "heard"]


def test_sweep_index_and_cli(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra:\n  sweeper:\n    params:\n      seed: 0,1\n")
    for seed, ua in ((0, 0.4), (1, 0.6)):
        make_run_folder(sweep / "distill_cpu" / f"fold0-seed{seed}", overrides=["experiment=distill_cpu", f"seed={seed}"], ua=ua)
    assert cli_main(["report", str(sweep)]) == 0
    index = sweep / INDEX_NAME
    assert capsys.readouterr().out.strip() == str(index)
    page = Page(index)
    assert page.unresolved(index) == []
    assert [ref for _, ref in page.refs] == [f"distill_cpu/fold0-seed{s}/{REPORT_NAME}" for s in (0, 1)]
    for job in ("distill_cpu/fold0-seed0", "distill_cpu/fold0-seed1"):
        job_page = sweep / job / REPORT_NAME
        assert Page(job_page).unresolved(job_page) == []
    html = index.read_text()
    assert '<td class="num best">0.6</td>' in html  # the better UA of the two jobs
    text = " ".join(page.text)
    assert "seed" in text and "experiment=distill_cpu" in text  # varied key as a column, the common override above
    assert report_folder(sweep / "distill_cpu" / "fold0-seed1") == [sweep / "distill_cpu" / "fold0-seed1" / REPORT_NAME]


def test_cli_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", str(tmp_path / "empty")]) == 2
    assert "neither a run folder" in capsys.readouterr().err


def test_report_option_composes_and_switches_off():
    from crossmodal.run import _compose

    assert _compose([], []).report is True
    assert _compose(["report=false"], []).report is False
