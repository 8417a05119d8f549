"""The entry point: ``python -m crossmodal.run [experiment=NAME] [group=option ...] [key=value ...]``.

Before Hydra runs anything, the command line is checked against the composed config so that a
misspelt key fails at once with the closest valid key, and the Lightning 1.x flag
``trainer.gpus=N`` is translated (so ``--cfg job`` shows what will really run).
"""
from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from crossmodal import config_dir
from crossmodal.config.checks import ConfigError, check_targets, missing_values, translate_gpus, unknown_key_message
from crossmodal.config.legacy import translate_overrides
from crossmodal.config.schema import register_configs

CONF_DIR = config_dir()  # conf/ of a checkout, or crossmodal/conf in an installed wheel
log = logging.getLogger("crossmodal")
register_configs()


# ----------------------------------------------------------------------------------- preflight


def _is_group(key: str, extra_dirs: list[Path]) -> bool:
    key = key.lstrip("+~")
    return "/" in key or any((d / key).is_dir() for d in [CONF_DIR, *extra_dirs])


def _compose(overrides: list[str], extra_dirs: list[Path]) -> DictConfig:
    """The run config for ``overrides``, old keys read the new way (:mod:`crossmodal.config.legacy`)."""
    return _compose_raw(_translate(overrides, extra_dirs), extra_dirs)


def _translate(overrides: list[str], extra_dirs: list[Path]) -> list[str]:
    return translate_overrides(list(overrides), lambda groups: _compose_raw(groups, extra_dirs),
                               lambda key: _is_group(key, extra_dirs))


def _compose_raw(overrides: list[str], extra_dirs: list[Path]) -> DictConfig:
    if extra_dirs:
        overrides = overrides + ["hydra.searchpath=[" + ",".join(f"file://{d}" for d in extra_dirs) + "]"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="run", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def preflight(argv: list[str]) -> list[str]:
    """Validate the overrides in ``argv``; return argv with old keys and ``trainer.gpus`` translated."""
    args = get_args_parser().parse_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion or not args.overrides and not args.cfg:
        return argv
    if args.multirun and args.cfg:
        # Hydra refuses `-m` with `--cfg`; show the sweep's config (launcher, sweeper) instead.
        argv = [a for a in argv if a not in ("-m", "--multirun")]
        at = argv.index(args.overrides[0]) if args.overrides else 0
        argv = argv[:at] + ["hydra.mode=MULTIRUN"] + argv[at:]
    extra_dirs = [Path(args.config_dir).resolve()] if args.config_dir else []
    translated = _translate(args.overrides, extra_dirs)  # old keys (data.source of eval_*, model.lr, ...)
    renamed = {new: old for old, new in zip(args.overrides, translated) if old != new}
    if renamed:
        argv = [dict(zip(args.overrides, translated)).get(arg, arg) for arg in argv]
        args.overrides = translated
    try:
        return _preflight(argv, args, extra_dirs)
    except ConfigError as exn:
        typed = [f"{old} was read as {new}" for new, old in renamed.items() if new.lstrip("+~").split("=")[0] in str(exn)]
        raise ConfigError(f"{exn} ({'; '.join(typed)})" if typed else str(exn)) from None


def _preflight(argv: list[str], args: Any, extra_dirs: list[Path]) -> list[str]:
    parsed = OverridesParser.create().parse_overrides(args.overrides)
    groups, values, sweeps = [], [], []
    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra"):
            continue
        if _is_group(key, extra_dirs):
            if override.is_sweep_override():
                first = next(iter(override.sweep_iterator()))
                groups.append(f"{override.get_key_element()}={first}")
            else:
                groups.append(override.input_line)
        elif override.is_sweep_override():
            sweeps.append(key)
        else:
            values.append(override)
    base = _compose(groups, extra_dirs)
    experiment = next((g.split("=", 1)[1] for g in groups if g.startswith("experiment=")), None)
    try:
        composed = _compose(groups + [o.input_line for o in values], extra_dirs)
    except ConfigCompositionException as exn:
        text = str(exn) + " " + str(exn.__cause__ or "")
        match = re.search(r"Could not override '([^']+)'", text)
        if match:
            raise ConfigError(unknown_key_message(match.group(1), base, experiment)) from None
        raise ConfigError(text.strip()) from None
    for key in sweeps:
        if OmegaConf.select(composed, key, default="__absent__") == "__absent__":
            raise ConfigError(unknown_key_message(key, composed, experiment))
    from crossmodal.config.checks import check_values  # value ranges (sweep values: each job, in execute)

    check_values(composed)
    return _translate_gpus_overrides(argv, composed, values)


def _translate_gpus_overrides(argv: list[str], composed: DictConfig, values) -> list[str]:
    explicit = {}
    for override in values:
        key = override.key_or_group.lstrip("+")
        if key.startswith("trainer."):
            explicit[key.split(".", 1)[1]] = override.value()
    if explicit.get("gpus") is None:
        return argv
    trainer = OmegaConf.to_container(composed.trainer, resolve=False)
    translated = translate_gpus(trainer, explicit)
    extra = [f"trainer.{k}={translated[k]}" for k in ("accelerator", "devices", "strategy") if k not in explicit]
    # right after the gpus override: argparse takes overrides as one run of positional arguments
    at = next(i for i, arg in enumerate(argv) if arg.lstrip("+").startswith("trainer.gpus=")) + 1
    return argv[:at] + extra + argv[at:]


# ---------------------------------------------------------------------------------------- a run


def execute(cfg: DictConfig) -> Any:
    """Run ``cfg.task`` in its run folder; write config.yaml, metrics.json and plots/."""
    import lightning as L
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from crossmodal.tasks import get_task
    from crossmodal.tasks.run_folder import RunFolder, build_loggers

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    experiment = hydra_cfg.runtime.choices.get("experiment")
    missing_values(cfg, experiment)
    check_targets(cfg)
    from crossmodal.config.checks import check_values

    check_values(cfg)
    check_output_dirs(cfg, run_dir)
    if cfg.get("cpu_threads"):
        import torch

        torch.set_num_threads(int(cfg.cpu_threads))
    if cfg.seed is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    is_zero = rank_zero_only.rank == 0
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if is_zero:
        OmegaConf.save(OmegaConf.create(resolved), run_dir / "config.yaml")
    loggers = build_loggers(cfg, run_dir)
    for logger in loggers:
        logger.log_hyperparams(resolved)
    ctx = RunFolder(cfg, run_dir, loggers)
    try:
        result = get_task(str(cfg.task.value if hasattr(cfg.task, "value") else cfg.task))(cfg, ctx)
        ctx.add_metrics(result or {})
    finally:
        if is_zero:
            ctx.write_metrics()
            log.info("run folder: %s (metrics.json, plots/, checkpoints/, run.log)", run_dir)
        _finish_wandb(loggers, run_dir if is_zero else None)
        if is_zero and cfg.get("report", True):
            write_run_report(run_dir)
    if cfg.get("optimized_metric"):
        value = ctx.metrics.get(cfg.optimized_metric)
        if value is None:
            raise ConfigError(f"optimized_metric={cfg.optimized_metric} is not among this run's metrics: {sorted(ctx.metrics)}")
        return value
    return None


def write_run_report(run_dir: Path) -> None:
    """<run>/report.html, and the sweep's index.html when this run is a job of a multirun. A failure is
    logged, not raised: the run's results are on disk already, and `crossmodal report` can retry."""
    from hydra.types import RunMode

    from crossmodal.report import write_index, write_report

    try:
        log.info("report: %s", write_report(run_dir))
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.info("sweep index: %s", write_index(hydra_cfg.sweep.dir, job_reports="none"))
    except Exception as exn:  # noqa: BLE001 - never lose a finished run to its report page
        log.warning("could not write the report of %s (%s); retry with: crossmodal report %s", run_dir, exn, run_dir)


def check_output_dirs(cfg: DictConfig, run_dir: Path) -> None:
    """Out-of-disk or unwritable output: fail now, with the key to change, not hours into a job."""
    from crossmodal.pipeline.shards import check_writable

    need = float(cfg.paths.get("min_free_gb", 0)) * 1e9
    for key, folder in (("hydra.run.dir", run_dir), ("paths.data_dir", Path(cfg.paths.data_dir))):
        existing = next(p for p in (folder, *folder.parents) if p.exists())  # data_dir is made when first used
        try:
            check_writable(existing, int(need))
        except OSError as exn:
            raise ConfigError(f"{key}={folder}: {exn}. Point {key} at a writable folder with space, "
                              "or lower paths.min_free_gb") from exn


def _finish_wandb(loggers: list[Any], run_dir: Path | None) -> None:
    """Each run (and each sweep job) is its own W&B run: record which one in <run>/wandb_run.json
    (the sweep summary links to it) and close it before the next job starts."""
    from crossmodal.utils.figures import is_wandb

    if not any(is_wandb(lg) for lg in loggers):
        return
    import json

    import wandb

    run = wandb.run
    if run is None:
        return
    if run_dir is not None and not run.disabled:
        info = {"id": run.id, "name": run.name, "group": run.group, "tags": list(run.tags), "dir": run.dir,
                "project": run.project, "mode": run.settings.mode}
        (run_dir / "wandb_run.json").write_text(json.dumps(info, indent=1))
    wandb.finish()


def _route_library_logs() -> None:
    """Send Lightning's messages through Hydra's handlers only (console + run.log), not twice."""
    import warnings

    import lightning  # noqa: F401 - it adds its own console handler on import; remove it after

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # Our training loaders are sized IterableDatasets on purpose (fixed batches per epoch and rank).
    warnings.filterwarnings("ignore", message=".*IterableDataset. has .__len__. defined.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="run")
def _hydra_main(cfg: DictConfig) -> Any:
    _route_library_logs()
    try:
        return execute(cfg)
    except ConfigError as exn:
        log.error("%s", exn)
        raise SystemExit(2) from None
    except ValueError as exn:
        from crossmodal.models.modelfile import ModelFileError

        if not isinstance(exn, ModelFileError):
            raise
        log.error("%s", exn)  # a refused pickle or unreadable model file: the message names it, no traceback
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = preflight(argv)
    except ConfigError as exn:
        print(f"Error: {exn}", file=sys.stderr)
        raise SystemExit(2) from None
    sys.argv = [sys.argv[0], *argv]
    _hydra_main()


if __name__ == "__main__":
    main()
