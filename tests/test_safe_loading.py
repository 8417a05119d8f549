"""Nothing a user hands us runs code: a crafted pickle given to any loading flag is refused, naming the
file, and its payload (creating a marker file) never runs.

Flags: ``crossmodal predict --ckpt``, ``crossmodal export --ckpt``, ``teacher_ckpt=``,
``model.init_from=`` (a MatConvNet-port ``.pth`` name), ``ckpt_path=`` for evaluate, test and train
(``ckpt_path=last``), plus Lightning's own restore in ``trainer.fit(ckpt_path=...)``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
import pytest
import torch

from crossmodal.cli import main as cli_main
from crossmodal.models.modelfile import UnsafeFileError, checkpoint_globals, safe_torch_load
from crossmodal.run import _compose
from crossmodal.tasks.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "crossmodal" / "assets" / "demo"


class Payload:
    """Unpickling this calls open(marker, "w"): the file appears iff the pickle's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def crafted(path: Path, marker: Path, payload: dict | None = None, legacy: bool = False) -> Path:
    """A file that looks like what the flag expects, with the payload inside."""
    content = {**(payload or {}), "evil": Payload(marker)}
    if legacy:  # the old (non-zip) torch.save format: a bare pickle stream
        with open(path, "wb") as f:
            pickle.dump(content, f)
    else:
        torch.save(content, path)
    return path


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


def _refused(exc_info_or_text, path: Path, marker: Path) -> None:
    text = exc_info_or_text if isinstance(exc_info_or_text, str) else str(exc_info_or_text.value)
    assert f"refused to load {path}" in text and "Nothing in it was run" in text, text
    assert not marker.exists(), "the crafted pickle's code ran"


def _cfg(*overrides: str, config_dirs: list[Path] | None = None):
    return _compose(list(overrides), config_dirs or [])


def test_the_payload_would_run_if_unpickled(tmp_path, marker):
    """The check is real: the same file loaded the old way (weights_only=False) does create the marker."""
    path = crafted(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(UnsafeFileError) as info:
        safe_torch_load(path)
    _refused(info, path, marker)
    legacy = crafted(tmp_path / "evil_legacy.pt", marker, legacy=True)
    with pytest.raises(UnsafeFileError) as info:
        safe_torch_load(legacy)
    _refused(info, legacy, marker)


def test_predict_ckpt(tmp_path, marker, capsys):
    path = crafted(tmp_path / "student.pt", marker, {"format": "crossmodal-student", "version": 1, "state_dict": {}})
    assert cli_main(["predict", str(DEMO / "emodb" / "wav" / "03a01Fa.flac"), "--ckpt", str(path)]) == 2
    _refused(capsys.readouterr().err, path, marker)


def test_export_ckpt(tmp_path, marker, capsys):
    path = crafted(tmp_path / "last.ckpt", marker, {"state_dict": {}, "hyper_parameters": {}})
    assert cli_main(["export", "--ckpt", str(path), "--format", "torchscript", "--out", str(tmp_path / "s.ts.pt")]) == 2
    _refused(capsys.readouterr().err, path, marker)
    assert not (tmp_path / "s.ts.pt").exists()


def test_teacher_ckpt(tmp_path, marker):
    from crossmodal.tasks.extract import run

    path = crafted(tmp_path / "teacher.pt", marker, {"format": "crossmodal-face-teacher", "version": 1, "state_dict": {}})
    videos = tmp_path / "videos"
    videos.mkdir()
    cfg = _cfg("experiment=extract_logits", f"prep.source={videos}", f"teacher_ckpt={path}", f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(UnsafeFileError) as info:
        run(cfg, RunFolder(cfg, tmp_path / "run"))
    _refused(info, path, marker)


def test_teacher_ckpt_of_online_distillation(tmp_path, marker):
    from crossmodal.lit.distill import DistillationModule

    path = crafted(tmp_path / "teacher.ckpt", marker, {"state_dict": {}, "hyper_parameters": {}})
    module = DistillationModule(student={"name": "small_cnn", "kwargs": {"channels": [4, 4, 4, 4]}},
                                frontend={"features": "logmel", "n_mels": 32}, mode="online", teacher=str(path))
    with pytest.raises(UnsafeFileError) as info:
        module.get_teacher()
    _refused(info, path, marker)


def test_model_init_from_matconvnet_pth(tmp_path, marker):
    from crossmodal.tasks.test import run

    path = crafted(tmp_path / "senet50_ferplus_dag.pth", marker, {"conv1_7x7_s2.weight": torch.zeros(1)})
    cfg = _cfg("experiment=teacher_eval", f"data.source={DEMO / 'ferplus'}", f"model.init_from={path}",
               f"paths.data_dir={tmp_path / 'data'}", "logger=csv")
    with pytest.raises(UnsafeFileError) as info:
        run(cfg, RunFolder(cfg, tmp_path / "run"))
    _refused(info, path, marker)


def test_model_pretrained_file(tmp_path, marker):
    from crossmodal.models.face import create_face_backbone

    path = crafted(tmp_path / "weights.pth", marker, {"state_dict": {}})
    with pytest.raises(UnsafeFileError) as info:
        create_face_backbone("vgg_small", pretrained=str(path), in_chans=1, input_size=44)
    _refused(info, path, marker)


def test_ckpt_path_of_evaluate(tmp_path, marker):
    from crossmodal.tasks.evaluate import run

    path = crafted(tmp_path / "student.ckpt", marker, {"state_dict": {}, "hyper_parameters": {}})
    cfg = _cfg("experiment=eval_emodb", f"benchmark.source={DEMO / 'emodb'}", f"ckpt_path={path}", f"paths.data_dir={tmp_path / 'data'}")
    with pytest.raises(UnsafeFileError) as info:
        run(cfg, RunFolder(cfg, tmp_path / "run"))
    _refused(info, path, marker)


def _entry_point_refuses(run_dir: Path, path: Path, marker: Path, *overrides: str) -> None:
    """python -m crossmodal.run ... in this process: exit code 2 and the refusal in the run's log."""
    from crossmodal.run import main

    with pytest.raises(SystemExit) as info:
        main([*overrides, f"hydra.run.dir={run_dir}", "logger=csv"])
    assert info.value.code == 2
    _refused((run_dir / "run.log").read_text(), path, marker)


def test_ckpt_path_of_test(tmp_path, marker):
    path = crafted(tmp_path / "epoch3.ckpt", marker, {"state_dict": {}, "pytorch-lightning_version": "2.6.6"})
    _entry_point_refuses(tmp_path / "run", path, marker, "experiment=distill_cpu", "task=test", f"ckpt_path={path}",
                         f"paths.data_dir={tmp_path / 'data'}", "data.emodb=/nonexistent", "data.ferplus=/nonexistent")


def test_ckpt_path_last_of_train_resume(tmp_path, marker):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    path = crafted(run_dir / "checkpoints" / "last.ckpt", marker, {"state_dict": {}, "loops": {}})
    _entry_point_refuses(run_dir, path, marker, "experiment=distill_cpu", "ckpt_path=last", f"paths.data_dir={tmp_path / 'data'}",
                         "data.emodb=/nonexistent", "data.ferplus=/nonexistent")


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_restore_itself_is_weights_only(tmp_path, marker):
    """trainer.fit(ckpt_path=X, weights_only=True) under our allow-list, as the train task calls it: Lightning's
    own load refuses the pickle too (not only our check before it), and restores our real checkpoints."""
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    kwargs = dict(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=str(tmp_path))
    trainer = L.Trainer(**kwargs)
    trainer.fit(_Tiny(), loader)
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good)
    evil = torch.load(good, weights_only=True)
    evil["evil"] = Payload(marker)
    torch.save(evil, tmp_path / "evil.ckpt")
    with checkpoint_globals(), pytest.raises(pickle.UnpicklingError):
        L.Trainer(**kwargs).fit(_Tiny(), loader, ckpt_path=str(tmp_path / "evil.ckpt"), weights_only=True)
    assert not marker.exists()
    resumed = L.Trainer(**{**kwargs, "max_epochs": 2})
    with checkpoint_globals():
        resumed.fit(_Tiny(), loader, ckpt_path=str(good), weights_only=True)
    assert resumed.global_step == 4
