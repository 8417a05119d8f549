"""The SLURM launcher config: it composes, and submitit writes an sbatch script with one task per GPU."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from crossmodal.run import _compose, prepare

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def _launcher(overrides):
    from hydra.core.hydra_config import HydraConfig

    cfg = _compose(overrides, with_hydra=True)
    HydraConfig.instance().set_config(cfg)
    prepare(cfg, signatures=False, require_values=False)  # trainer.gpus=8 -> accelerator/devices/strategy, as a run does
    launcher = cfg.hydra.launcher
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.sweep.dir = "/tmp/sweep"
    return OmegaConf.to_container(launcher, resolve=True), cfg


def test_sbatch_has_one_task_per_gpu(tmp_path):
    from submitit import SlurmExecutor
    from submitit.slurm.slurm import _make_sbatch_string

    params, cfg = _launcher(["experiment=distill_senet", "trainer.gpus=8", "trainer.num_nodes=2",
                             "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu"])
    assert params["tasks_per_node"] == params["gpus_per_node"] == 8 and params["nodes"] == 2
    # submitit's own translation of the launcher's generic names (what AutoExecutor applies on a cluster)
    names = SlurmExecutor._equivalence_dict()
    sbatch = {names.get(k, k): v for k, v in params.items() if k not in {"_target_", "submitit_folder", "max_num_timeout"}}
    sbatch["mem"] = f"{sbatch['mem']}GB"
    script = _make_sbatch_string(command="python -m crossmodal.run", folder=tmp_path, **sbatch)
    assert "#SBATCH --ntasks-per-node=8" in script
    assert "#SBATCH --gpus-per-node=8" in script
    assert "#SBATCH --nodes=2" in script
    assert "#SBATCH --partition=gpu" in script
    assert "srun" in script  # srun starts the 8 processes; Lightning only joins them


def test_slurm_launcher_needs_a_gpu_count():
    with pytest.raises(Exception, match="needs the GPUs per node as a number"):
        _launcher(["trainer=ddp", "hydra/launcher=submitit_slurm"])
