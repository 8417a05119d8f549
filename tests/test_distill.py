"""Distillation: the loss, window targets, bad input, ROC AUC, cached vs online, and learning on real clips."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn import functional as F

from crossmodal.data.distill import (
    BadDistillSample,
    DistillDataModule,
    DistillDecoder,
    SpeechCollate,
    aggregate_logits,
    choose_window,
)
from crossmodal.data.stream import ShardStream
from crossmodal.emotions import EMOTIONS
from crossmodal.eval.roc import per_emotion_auc
from crossmodal.io.skips import BadSampleError
from crossmodal.lit.distill import DistillationModule
from crossmodal.models.losses import DistillationLoss, soft_cross_entropy
from crossmodal.pipeline.shards import load_manifest

sys.path.insert(0, str(Path(__file__).parent))
from distill_fixtures import constructed_logits, write_distill_shards  # noqa: E402

SHARED = ["neutral", "happiness", "sadness", "anger", "disgust", "fear"]


# ------------------------------------------------------------------------------------ loss


def _hand_soft_ce(student, teacher, T):
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        t_exp = [math.exp(v / T) for v in t_row]
        p = [v / sum(t_exp) for v in t_exp]
        s_exp = [math.exp(v / T) for v in s_row]
        log_q = [math.log(v / sum(s_exp)) for v in s_exp]
        total += -sum(pi * lq for pi, lq in zip(p, log_q))
    return total / len(student)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_soft_cross_entropy_equals_hand_computation(temperature):
    student = [[0.5, -1.0, 2.0, 0.0, 0.3, -0.2, 1.1, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]
    teacher = [[3.0, 0.0, -1.0, 0.5, 0.5, 0.0, -2.0, 1.0], [0.0, 4.0, 0.0, 0.0, 1.0, 0.0, 0.0, -1.0]]
    loss = DistillationLoss(temperature=temperature)(torch.tensor(student), torch.tensor(teacher))
    assert loss["loss"].item() == pytest.approx(_hand_soft_ce(student, teacher, temperature), rel=1e-5)


def test_loss_options():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 8), torch.randn(5, 8) * 3
    soft = soft_cross_entropy(student, teacher, 2.0).mean()
    p = F.softmax(teacher / 2, -1)
    entropy = -(p * p.log()).sum(-1).mean()
    kl = DistillationLoss(temperature=2.0, kind="kl")(student, teacher)["loss"]
    assert kl.item() == pytest.approx((soft - entropy).item(), rel=1e-4)
    assert DistillationLoss(temperature=2.0, t2_scaling=True)(student, teacher)["loss"].item() == pytest.approx(4 * soft.item(), rel=1e-5)
    parts = DistillationLoss(temperature=2.0, hard_weight=0.5)(student, teacher)
    hard = F.cross_entropy(student, teacher.argmax(-1))
    assert parts["loss"].item() == pytest.approx((soft + 0.5 * hard).item(), rel=1e-5)
    assert DistillationLoss(kind="kl")(teacher, teacher)["loss"].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="kind"):
        DistillationLoss(kind="mse")


# --------------------------------------------------------------------------- window targets


def test_window_aggregation_on_hand_made_logits():
    times = np.array([0.0, 0.24, 0.48, 0.72, 0.96, 1.20], dtype=np.float32)
    logits = np.zeros((6, 8), dtype=np.float32)
    logits[:, 0] = [1, 2, 3, 4, 5, 6]
    logits[:, 1] = [9, 0, 0, 0, 0, -9]
    # frames at 0.24, 0.48 and 0.72 fall in [0.2, 0.9)
    np.testing.assert_allclose(aggregate_logits(logits, times, 0.2, 0.9, "max")[:2], [4, 0])
    np.testing.assert_allclose(aggregate_logits(logits, times, 0.2, 0.9, "mean")[:2], [3, 0])
    # the start is inclusive, the end exclusive
    np.testing.assert_allclose(aggregate_logits(logits, times, 0.0, 0.24, "max")[:2], [1, 9])
    np.testing.assert_allclose(aggregate_logits(logits, times, 0.96, 5.0, "mean")[:2], [5.5, -4.5])
    assert aggregate_logits(logits, times, 1.3, 2.0) is None
    with pytest.raises(ValueError, match="reduce"):
        aggregate_logits(logits, times, 0, 1, "median")


def test_window_choice():
    torch.manual_seed(0)
    assert choose_window(10.0, 4.024, train=False) == (0.0, 10.0)
    assert choose_window(2.0, 4.024, train=True) == (0.0, 2.0)  # short clip: whole clip, padded later
    starts = [choose_window(10.0, 4.0, train=True)[0] for _ in range(200)]
    assert min(starts) >= 0 and max(starts) <= 6.0 and np.std(starts) > 1.0


# ----------------------------------------------------------------------------- bad input


def _sample(key="clip", seconds=2.0, logits=None, times=None, amplitude=0.1, split="unheard"):
    import json

    from crossmodal.io.audio import encode_flac
    from crossmodal.pipeline.pairs import npy_bytes

    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(int(seconds * 16000)) * amplitude).astype(np.float32)
    times = np.arange(0, seconds, 0.24, dtype=np.float32) if times is None else times
    logits = constructed_logits("anger", len(times), 0) if logits is None else logits
    return {
        "__key__": key, "flac": encode_flac(wave, 16000), "logits.npy": npy_bytes(logits), "times.npy": npy_bytes(times),
        "json": json.dumps({"split": split, "label": "anger", "identity": "x"}).encode(),
    }


def test_decoder_takes_a_window_and_its_target():
    decoded = DistillDecoder(train=False)(_sample())
    assert decoded["wave"].shape == (32000,) and decoded["split"] == 2 and decoded["label"] == EMOTIONS.index("anger")
    assert decoded["target"].argmax() == EMOTIONS.index("anger")
    long = DistillDecoder(train=False, max_seconds=1.5)(_sample(seconds=3.0))
    assert long["wave"].shape == (24000,)  # clamped
    train = DistillDecoder(train=True, window_seconds=1.0)(_sample(seconds=3.0))
    assert train["wave"].shape == (16000,)


def test_labels_only_reads_the_true_label_and_no_teacher_output():
    import json

    sample = _sample()
    del sample["logits.npy"], sample["times.npy"]
    out = DistillDecoder(train=True, labels_only=True, window_seconds=1.0)(sample)
    assert out["label"] == EMOTIONS.index("anger") and "target" not in out and out["wave"].shape == (16000,)
    sample["json"] = json.dumps({"split": "train"}).encode()
    with pytest.raises(BadDistillSample, match="no_label"):
        DistillDecoder(train=True, labels_only=True)(sample)


@pytest.mark.parametrize(
    "reason, kwargs",
    [
        ("nonfinite_logits", {"logits": np.full((9, 8), np.nan, dtype=np.float32)}),
        ("logit_dim", {"logits": np.zeros((9, 7), dtype=np.float32)}),
        ("no_frame_in_window", {"times": np.full(9, 50.0, dtype=np.float32)}),
        ("silent", {"amplitude": 0.0}),
        ("too_short", {"seconds": 0.2}),
    ],
)
def test_bad_samples_are_named(reason, kwargs):
    with pytest.raises(BadDistillSample, match=f"{reason}: sample bad_one"):
        DistillDecoder(train=True)(_sample(key="bad_one", **kwargs))


def test_bad_samples_are_counted_or_fatal_in_strict_mode(tmp_path):
    from crossmodal.pipeline.shards import write_shard

    samples = [_sample("good_a"), _sample("nan_b", logits=np.full((9, 8), np.inf, dtype=np.float32)), _sample("good_c")]
    write_shard(tmp_path / "unheard-000000.tar", samples)
    stream = ShardStream([str(tmp_path / "unheard-000000.tar")], DistillDecoder(train=False), SpeechCollate(), 8, train=False)
    batches = list(stream)
    assert batches[0]["key"] == ["good_a", "good_c"] and int(batches[0]["skipped"]) == 1
    strict = ShardStream([str(tmp_path / "unheard-000000.tar")], DistillDecoder(train=False), SpeechCollate(), 8, train=False, strict=True)
    with pytest.raises(BadSampleError, match="nan_b"):
        list(strict)


# ------------------------------------------------------------------------------- ROC AUC


def test_auc_matches_sklearn_and_reports_absent_emotions():
    scores = torch.tensor(
        [[0.7, 0.1, 0.1, 0.1, 0, 0, 0, 0], [0.2, 0.5, 0.2, 0.1, 0, 0, 0, 0], [0.1, 0.2, 0.6, 0.1, 0, 0, 0, 0],
         [0.3, 0.3, 0.2, 0.2, 0, 0, 0, 0], [0.25, 0.25, 0.4, 0.1, 0, 0, 0, 0], [0.6, 0.3, 0.05, 0.05, 0, 0, 0, 0],
         [0.1, 0.1, 0.1, 0.7, 0, 0, 0, 0]]
    )
    labels = torch.tensor([0, 1, 2, 1, 0, 3, 3])
    result = per_emotion_auc(scores, labels, with_curves=True)
    for index, emotion in enumerate(EMOTIONS[:4]):
        expected = roc_auc_score((labels == index).numpy(), scores[:, index].numpy())
        assert result["auc"][emotion] == pytest.approx(expected, abs=1e-6)
    assert result["absent"] == ["anger", "disgust", "fear", "contempt"]
    assert result["mean"] == pytest.approx(np.mean([result["auc"][e] for e in EMOTIONS[:4]]))
    assert result["mean_paper"] == pytest.approx(result["mean"])  # no rare emotion was scored
    assert not any(math.isnan(v) for v in result["auc"].values())
    assert set(result["curves"]) == set(EMOTIONS[:4])
    # an emotion that is every clip's label has no negatives: absent too, no mean at all if alone
    only = per_emotion_auc(scores[:2], torch.tensor([1, 1]))
    assert only["auc"] == {} and "mean" not in only and "happiness" in only["absent"]


# ------------------------------------------------------------------- cached vs online modes


class TinyTeacher(nn.Module):
    """A deterministic stand-in for a FaceTeacher: same preprocess/forward interface."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.head = nn.Linear(64, 8)

    def preprocess(self, images):
        x = torch.as_tensor(images).float().to(self.head.weight.device) / 255.0
        return F.adaptive_avg_pool2d(x.unsqueeze(1), 8)

    def forward(self, x):
        return self.head(x.flatten(1)) * 5


@pytest.fixture(scope="module")
def pair_and_distill_shards(emodb_root, tmp_path_factory):
    from crossmodal.pipeline.extract import extract_logits

    root = tmp_path_factory.mktemp("online")
    pairs = write_distill_shards(root / "pairs", emodb_root, per_speaker=2, with_frames=True)
    distill = root / "distill"
    extract_logits(load_manifest(pairs), distill, TinyTeacher(), teacher_name="tiny", logits_dtype="float32")
    return pairs, distill


def test_cached_and_online_modes_give_the_same_loss(pair_and_distill_shards):
    pairs, distill = pair_and_distill_shards
    torch.manual_seed(0)
    common = dict(student={"name": "small_cnn"}, frontend={"features": "logmel"})
    cached = DistillationModule(mode="cached", **common).eval()
    online = DistillationModule(mode="online", **common).eval()
    online.load_state_dict(cached.state_dict())
    online.set_teacher(TinyTeacher())
    assert not any(name.startswith("teacher") for name in online.state_dict())  # the teacher is not a submodule
    assert all(p.requires_grad is False for p in online.get_teacher().parameters())
    assert len(list(online.parameters())) == len(list(cached.parameters()))  # nor in the optimiser

    def first_batch(path, mode):
        dm = DistillDataModule(str(path), mode=mode, num_workers=0, eval_batch_size=6, train_eval_shards=0)
        return next(iter(dm.val_dataloader()))

    cached_batch, online_batch = first_batch(distill, "cached"), first_batch(pairs, "online")
    assert cached_batch["key"] == online_batch["key"]
    torch.testing.assert_close(online.teacher_targets(online_batch["frames"]), cached_batch["target"], atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        loss_cached = cached.batch_loss(cached_batch)[0]["loss"]
        loss_online = online.batch_loss(online_batch)[0]["loss"]
    assert loss_cached.item() == pytest.approx(loss_online.item(), rel=1e-5)


# ---------------------------------------------------------------------- learning on real clips


@pytest.fixture(scope="module")
def emodb_distill_shards(emodb_root, tmp_path_factory):
    return write_distill_shards(tmp_path_factory.mktemp("distill") / "shards", emodb_root, per_speaker=6)


def test_distillation_on_real_clips_lowers_the_loss(emodb_distill_shards, tmp_path):
    L.seed_everything(0)
    dm = DistillDataModule(str(emodb_distill_shards), batch_size=8, eval_batch_size=8, num_workers=0, batches_per_epoch=6, window_seconds=1.5, train_eval_shards=1, shuffle_buffer=16)
    model = DistillationModule(
        student={"name": "small_cnn", "kwargs": {"dropout": 0.0, "channels": [8, 16, 32, 32], "first_stride": 2}}, frontend={"features": "logmel", "n_mels": 32},
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 3e-3}, scheduler=None, label_classes=SHARED,
    )
    # the training clips, whole (the loader trains on random windows of them)
    train_clips = ShardStream(dm.split_paths("train"), DistillDecoder(train=False), SpeechCollate(), 8, train=False)
    fixed = next(iter(train_clips))

    def fixed_loss():  # batch statistics: a few steps cannot settle BN's running averages
        model.train()
        model.frontend.eval()  # no SpecAugment
        with torch.no_grad():
            return model.batch_loss(fixed)[0]["loss"].item()

    before = fixed_loss()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, check_val_every_n_epoch=3)
    trainer.fit(model, datamodule=dm)
    after = fixed_loss()
    print(f"loss on a fixed batch of training clips: {before:.4f} -> {after:.4f}")
    assert after < before - 0.02, (before, after)
    metrics = trainer.callback_metrics
    assert {"val/auc_unheard/mean", "val/auc_heard/mean", "val/auc_train/mean", "val/ua_unheard", "val/loss", "train/loss"} <= set(metrics)
    assert all(math.isfinite(float(v)) for v in metrics.values())
    plots = tmp_path / "plots"
    assert (plots / "val_roc_unheard.png").stat().st_size > 1000
    table = (plots / "val_auc_table.csv").read_text()
    assert table.startswith("emotion,") and "absent" in table  # surprise/contempt never dominate here


def test_supervised_student_trains_on_labels_and_writes_its_student_file(emodb_distill_shards, tmp_path):
    from crossmodal.lit.student import StudentSpeech
    from crossmodal.models.loading import load_student_modules

    L.seed_everything(0)
    dm = DistillDataModule(str(emodb_distill_shards), labels_only=True, batch_size=8, eval_batch_size=8, num_workers=0,
                           batches_per_epoch=2, window_seconds=2.0, shuffle_buffer=8)
    model = StudentSpeech(student={"name": "small_cnn", "kwargs": {"channels": [8, 16, 16, 32]}}, frontend={"features": "logmel", "n_mels": 32},
                          optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
                          scheduler={"_target_": "crossmodal.utils.optim.onecycle", "_partial_": True}, label_classes=SHARED)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert {"test/ua_unheard", "test/wa_heard", "test/loss_unheard"} <= set(metrics)
    assert 0.0 <= float(metrics["test/ua_unheard"]) <= 1.0
    _, net, info = load_student_modules(tmp_path / "student.safetensors")
    assert info["net_name"] == "small_cnn" and info["module"] == "StudentSpeech" and info["label_classes"] == SHARED
    assert "test/ua_unheard" in info["metrics"]
    assert (tmp_path / "plots" / "test_confusion_unheard.png").exists()


def test_mixup_mixes_windows_and_their_targets_in_training_only(emodb_distill_shards, monkeypatch):
    """model.mixup_alpha: in training each window is mixed with another of the batch (features at lam,
    the loss the same mix of both targets' losses); validation/test never mix; a negative alpha is refused."""
    dm = DistillDataModule(str(emodb_distill_shards), batch_size=6, eval_batch_size=6, num_workers=0, window_seconds=1.5)
    batch = next(iter(ShardStream(dm.split_paths("train"), DistillDecoder(train=False), SpeechCollate(), 6, train=False)))
    common = dict(student={"name": "small_cnn", "kwargs": {"channels": [8, 16, 16, 32]}}, frontend={"features": "logmel", "n_mels": 32},
                  label_classes=SHARED)
    model = DistillationModule(mixup_alpha=0.4, **common)
    model.train()
    model.net.eval()  # running BN statistics and no SpecAugment: the network is a fixed function here
    model.frontend.eval()
    order = torch.tensor([5, 4, 3, 2, 1, 0])
    monkeypatch.setattr(torch.distributions.Beta, "sample", lambda self, *a: torch.tensor(0.3))  # lam -> max(0.3, 0.7)
    monkeypatch.setattr(torch, "randperm", lambda n, **kw: order)
    with torch.no_grad():
        parts, _, targets = model.batch_loss(batch)
        features, frames = model.frontend(batch["wave"], batch["lengths"])
        logits, _ = model.net(0.7 * features + 0.3 * features[order], torch.maximum(frames, frames[order]))
        expected = 0.7 * model.criterion(logits, targets)["loss"] + 0.3 * model.criterion(logits, targets[order])["loss"]
        assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
        unmixed = model.criterion(model(batch["wave"], batch["lengths"])[0], targets)["loss"]
        model.eval()  # validation/test: never mixed
        assert model.batch_loss(batch)[0]["loss"].item() == pytest.approx(unmixed.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"model\.mixup_alpha=-0\.1 must be >= 0"):
        DistillationModule(mixup_alpha=-0.1, **common)


def test_unheard_and_train_curves_are_scored_every_n_epochs_and_at_the_last(emodb_distill_shards, tmp_path):
    from crossmodal.callbacks.training import TrainingCurves

    L.seed_everything(0)
    dm = DistillDataModule(str(emodb_distill_shards), batch_size=4, eval_batch_size=4, num_workers=0, batches_per_epoch=1,
                           window_seconds=1.0, train_eval_shards=1, shuffle_buffer=4, curve_every_n_epochs=2)
    assert [dm.val_splits(e, 3) for e in range(3)] == [("heard",), None, None]  # epoch 2 of 3 and the last
    model = DistillationModule(student={"name": "small_cnn", "kwargs": {"channels": [4, 4, 4, 4]}}, frontend={"features": "logmel", "n_mels": 16})
    rows: dict[int, int] = {}
    logged: dict[int, set[str]] = {}
    forward, log = model.forward, model.log

    def counting_forward(wave, lengths):
        if not model.training:
            rows[model.current_epoch] = rows.get(model.current_epoch, 0) + len(wave)
        return forward(wave, lengths)

    def recording_log(name, *args, **kwargs):
        logged.setdefault(model.current_epoch, set()).add(name)
        return log(name, *args, **kwargs)

    model.forward, model.log = counting_forward, recording_log
    curves = TrainingCurves()
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, callbacks=[curves])
    trainer.fit(model, datamodule=dm)
    total = dm.manifest().count("heard-") + dm.manifest().count("unheard-") + dm.manifest().count("train-")  # upper bound
    assert dm.manifest().count("heard-") <= rows[0] < rows[1] == rows[2] <= total  # off-epoch: pure unheard/train batches not run
    assert "val/loss_heard" in logged[0] and not any("unheard" in n or "_train" in n for n in logged[0])
    assert {"val/auc_unheard/mean", "val/auc_train/mean", "val/loss_unheard"} <= logged[1] & logged[2]
    assert curves.history["val/loss"][0] == [0, 1, 2] and curves.history["val/auc_unheard/mean"][0] == [1, 2]  # no stale points

    # the kept split's numbers are those of a full pass: a mixed batch runs whole
    batches = [b for b in dm.val_dataloader() if 1 in b["split"].tolist()]
    batch = next((b for b in batches if len(set(b["split"].tolist())) > 1), batches[0])
    model.eval()
    with torch.no_grad():
        for splits in (None, ("heard",)):
            model.scores.start_epoch()
            model._eval_step(batch, splits)
            scores, labels, groups = model.scores.compute()
            model.scores.reset()
            heard = groups == 1
            losses = model.split_loss.compute()
            model.split_loss.reset()
            if splits is None:
                full = scores[heard], losses["heard"]
            else:
                assert set(groups.tolist()) == {1} and set(losses) == {"heard"}
                assert torch.equal(scores, full[0]) and losses["heard"] == full[1]
