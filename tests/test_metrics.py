"""Metrics have one definition: the LightningModules' torchmetrics objects agree with the probe's
sklearn scores; tables and W&B routing go through one helper each."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from torchmetrics.classification import MulticlassRecall

from crossmodal.eval.classification import SplitClassification, SplitMean, UnweightedAverageRecall
from crossmodal.eval.metrics import FoldScores, ua_score, wa_score
from crossmodal.utils.figures import is_wandb, markdown_table, send_table


def _random_predictions(seed: int, n: int = 120, true_classes: int = 5, predicted_classes: int = 7):
    rng = np.random.default_rng(seed)
    # predictions reach classes that never occur in the truth: the case where UA definitions differ
    return rng.integers(0, true_classes, n), rng.integers(0, predicted_classes, n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torchmetrics_ua_is_the_probes_ua(seed):
    y_true, y_pred = _random_predictions(seed)
    metric = UnweightedAverageRecall(8)
    for chunk in np.array_split(np.arange(len(y_true)), 4):  # batches, as in an epoch
        metric.update(torch.from_numpy(y_pred[chunk]), torch.from_numpy(y_true[chunk]))
    assert float(metric.compute()) == pytest.approx(ua_score(y_true, y_pred), abs=1e-6)
    # torchmetrics' macro recall also averages the predicted-but-absent classes (recall 0): lower
    macro = MulticlassRecall(8, average="macro")(torch.from_numpy(y_pred), torch.from_numpy(y_true))
    assert float(macro) < ua_score(y_true, y_pred)


def test_ua_equals_macro_recall_when_every_class_occurs():
    y_true, y_pred = _random_predictions(3, true_classes=8, predicted_classes=8)
    macro = MulticlassRecall(8, average="macro")(torch.from_numpy(y_pred), torch.from_numpy(y_true))
    assert float(macro) == pytest.approx(ua_score(y_true, y_pred), abs=1e-6)


def test_split_classification_scores_each_split_like_sklearn():
    y_true, y_pred = _random_predictions(4)
    splits = np.random.default_rng(5).integers(0, 2, len(y_true))  # no clip of the third split
    metrics = SplitClassification(("train", "heard", "unheard"), 8)
    for chunk in np.array_split(np.arange(len(y_true)), 3):
        metrics.update(torch.from_numpy(y_pred[chunk]), torch.from_numpy(y_true[chunk]), torch.from_numpy(splits[chunk]))
    names = tuple(f"c{i}" for i in range(8))
    results = metrics.results(names)
    assert set(results) == {"train", "heard"}
    for index, split in enumerate(("train", "heard")):
        chosen = splits == index
        expected = FoldScores(names)
        expected.add(y_true[chosen], y_pred[chosen])
        result = results[split]
        assert result["count"] == chosen.sum()
        assert result["ua"] == pytest.approx(ua_score(y_true[chosen], y_pred[chosen]), abs=1e-6)
        assert result["wa"] == pytest.approx(wa_score(y_true[chosen], y_pred[chosen]), abs=1e-6)
        assert result["confusion"].numpy().tolist() == expected.confusion.tolist()
        assert result["recall"] == pytest.approx(expected.per_class_recall(), abs=1e-6)  # the 5 classes with clips
    assert metrics.results() == {}  # results() resets for the next epoch


def test_split_mean_weights_batches_by_clip_count():
    losses = SplitMean(("train", "heard", "unheard"))
    losses.update(1, torch.tensor(1.0), 3)
    losses.update(1, torch.tensor(3.0), 1)
    losses.update(2, torch.tensor(2.0), 2)
    assert losses.compute() == pytest.approx({"heard": 1.5, "unheard": 2.0})


def test_markdown_table_formats_cells():
    table = markdown_table(["emotion", "heard", "unheard"], [["neutral", 0.98889, None], ["clips", 12, np.float64(0.5)]])
    assert table.splitlines() == [
        "| emotion | heard | unheard |",
        "|---|---|---|",
        "| neutral | 0.9889 |  |",
        "| clips | 12 | 0.5000 |",
    ]


class _RecordingWandb(WandbLogger):
    """A WandbLogger that keeps the tables it is sent instead of starting a W&B run."""

    def __init__(self) -> None:
        super().__init__(offline=True)
        self.tables = []

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None):
        self.tables.append((key, columns, data))


def test_tables_reach_wandb_loggers_only(tmp_path):
    wandb_logger, csv_logger = _RecordingWandb(), CSVLogger(tmp_path)
    assert is_wandb(wandb_logger) and not is_wandb(csv_logger)
    send_table([csv_logger, wandb_logger], "test/auc_table", ["emotion", "auc"], [["anger", torch.tensor(0.75)]])
    assert wandb_logger.tables == [("test/auc_table", ["emotion", "auc"], [["anger", 0.75]])]
    assert not (tmp_path / "lightning_logs").exists()  # the CSV logger was sent nothing


def test_run_folder_tables_are_markdown_files_and_wandb_tables(tmp_path):
    from omegaconf import OmegaConf

    from crossmodal.tasks.run_folder import RunFolder

    wandb_logger = _RecordingWandb()
    ctx = RunFolder(OmegaConf.create({}), tmp_path, loggers=[CSVLogger(tmp_path / "csv"), wandb_logger])
    path = ctx.log_table("demo/ua", ["model", "UA"], [["chance", 1 / 6], ["student", None]])
    assert path == tmp_path / "tables" / "demo_ua.md"
    assert path.read_text() == "| model | UA |\n|---|---|\n| chance | 0.1667 |\n| student |  |\n"
    assert wandb_logger.tables == [("demo/ua", ["model", "UA"], [["chance", 1 / 6], ["student", None]])]
