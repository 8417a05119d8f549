"""The entry point: ``python -m crossmodal.run [experiment=NAME] [group=option ...] [key=value ...]``.

Before anything runs, :class:`RunChecks` (a Hydra callback, conf/hydra/default.yaml) checks the composed config
(:func:`prepare`) and that the run folder can be written; ``--cfg`` prints it after the same checks (``--resolve``
too). A composition error (a misspelt key, an unknown experiment) is one line naming the nearest valid key or option.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra import initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from crossmodal import config_dir
from crossmodal.config.checks import ConfigError, explicit_trainer_keys, translate_gpus, unknown_key_message
from crossmodal.config.schema import check_config, register_configs

CONF_DIR = config_dir()  # conf/ of a checkout, or crossmodal/conf in an installed wheel
log = logging.getLogger("crossmodal")
register_configs()


def _compose(overrides: list[str], extra_dirs: list[Path] | tuple = (), mode: RunMode = RunMode.RUN,
             with_hydra: bool = False) -> DictConfig:
    """The run config for ``overrides`` (and the ``hydra`` node when ``with_hydra``), as Hydra composes it."""
    if extra_dirs:
        overrides = [*overrides, "hydra.searchpath=[" + ",".join(f"file://{d}" for d in extra_dirs) + "]"]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = GlobalHydra.instance().hydra.compose_config(
                config_name="run", overrides=list(overrides), run_mode=mode, with_log_configuration=False)
    finally:
        GlobalHydra.instance().clear()
    if not with_hydra:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def prepare(cfg: DictConfig, *, signatures: bool = True, require_values: bool = True) -> None:
    """``trainer.gpus`` read as accelerator/devices/strategy (in place), then every check of the
    config (:func:`check_config`). ``cfg`` is the composed config, with its ``hydra`` node or inside a run."""
    hydra_cfg = cfg.hydra if "hydra" in cfg else HydraConfig.get()
    if cfg.trainer.get("gpus") is not None:
        trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
        translated = translate_gpus(trainer, explicit_trainer_keys(hydra_cfg.overrides.task))
        with read_write(cfg.trainer), open_dict(cfg.trainer):
            for key in ("accelerator", "devices", "strategy"):
                cfg.trainer[key] = translated[key]
    experiment = hydra_cfg.runtime.choices.get("experiment")
    check_config(cfg, experiment, signatures=signatures, require_values=require_values)


def check_output_dirs(cfg: DictConfig, folders: dict[str, Path]) -> None:
    """Out-of-disk or unwritable output: fail now, with the key to change, not hours into a job.
    ``folders``: key -> folder (made when first used, so its nearest existing parent is probed)."""
    from crossmodal.pipeline.shards import check_writable

    need = float(cfg.paths.get("min_free_gb", 0)) * 1e9
    for key, folder in folders.items():
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        try:
            check_writable(existing, int(need))
        except OSError as exn:
            raise ConfigError(f"{key}={folder}: {exn}. Point {key} at a writable folder with space, "
                              "or lower paths.min_free_gb") from exn


class RunChecks(Callback):
    """Hydra callback: check the composed config and the folders it writes before Hydra makes the
    run folder; a problem ends the command with one line naming the key (exit code 2)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _refused():
            HydraConfig.instance().set_config(config)  # ${hydra:...} resolves from here on
            run_dir = Path(str(config.hydra.run.dir)).absolute()
            with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
                config.hydra.runtime.output_dir = str(run_dir)  # as Hydra sets it when the run starts
            HydraConfig.instance().set_config(config)
            prepare(config)
            check_output_dirs(config, {"hydra.run.dir": run_dir, "paths.data_dir": Path(config.paths.data_dir)})

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with _refused():  # each job's values are checked when it starts (execute)
            HydraConfig.instance().set_config(config)
            check_output_dirs(config, {"hydra.sweep.dir": Path(str(config.hydra.sweep.dir)).absolute()})


@contextlib.contextmanager
def _refused() -> Iterator[None]:
    """A ConfigError as one line on stderr and exit code 2: Hydra would only warn of a callback's error."""
    try:
        yield
    except ConfigError as exn:
        print(f"Error: {exn}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception:  # a bug in the checks: stop, do not let Hydra turn it into a warning
        traceback.print_exc()
        raise SystemExit(1) from None


def show_config(args: Any) -> None:
    """``--cfg job|hydra|all [--package P] [--resolve]``: the composed config after the run's checks
    (the ``_target_`` signatures aside, to stay fast), with ``trainer.gpus`` read as a run reads it."""
    mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN
    extra_dirs = [Path(args.config_dir).resolve()] if args.config_dir else []
    cfg = _compose(args.overrides, extra_dirs, mode=mode, with_hydra=True)
    HydraConfig.instance().set_config(cfg)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = mode
        if mode == RunMode.RUN:  # what Hydra sets when the run starts, so --resolve can show paths.output_dir
            cfg.hydra.runtime.output_dir = str(Path(str(cfg.hydra.run.dir)).absolute())
    HydraConfig.instance().set_config(cfg)
    prepare(cfg, signatures=False, require_values=False)
    OmegaConf.set_readonly(cfg, False)
    with open_dict(cfg):
        if args.cfg == "job":
            del cfg["hydra"]
        elif args.cfg == "hydra":
            for key in [k for k in cfg if k != "hydra"]:
                del cfg[key]
            for key in ("help", "hydra_help"):
                del cfg.hydra[key]
    shown = OmegaConf.select(cfg, args.package) if args.package not in (None, "_global_") else cfg
    if shown is None:
        raise ConfigError(f"--package {args.package}: no such node in the config")
    if args.resolve:
        OmegaConf.resolve(shown)
    print(OmegaConf.to_yaml(shown) if OmegaConf.is_config(shown) else shown, end="")


def _explain(exn: Exception, overrides: list[str], extra_dirs: list[Path]) -> ConfigError:
    """A Hydra composition error as one line that names the key or option and how to fix it."""
    text = str(exn).strip()
    if isinstance(exn, MissingConfigException) and exn.options is not None:
        match = re.search(r"Could not find '([^']+)/([^'/]+)'", text)
        if match:
            group, option = match.groups()
            nearest = difflib.get_close_matches(option, exn.options, n=1, cutoff=0.5)
            hint = f" Did you mean {group}={nearest[0]}?" if nearest else ""
            return ConfigError(f"{group}={option}: no such option in conf/{group}/.{hint} "
                               f"Choose one of: {', '.join(sorted(exn.options))}")
    match = re.search(r"Could not override '([^']+)'", text)
    if match:
        key = match.group(1)
        rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
        experiment = next((o.split("=", 1)[1] for o in rest if o.startswith("experiment=")), None)
        try:
            return ConfigError(unknown_key_message(key, _compose(rest, extra_dirs), experiment))
        except (ConfigCompositionException, OverrideParseException):  # the other overrides fail too: Hydra's own words
            pass
    if isinstance(exn, OverrideParseException):
        return ConfigError(f"cannot read the command line: {text.splitlines()[0]}")
    return ConfigError(" ".join(line.strip() for line in text.splitlines() if line.strip()))


def execute(cfg: DictConfig) -> Any:
    """Run ``cfg.task`` in its run folder; write config.yaml, metrics.json and plots/."""
    import lightning as L
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from crossmodal.tasks import get_task
    from crossmodal.tasks.run_folder import RunFolder, build_loggers

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    prepare(cfg)  # a sweep's job: its own values (a single run was checked by RunChecks already; cheap)
    check_output_dirs(cfg, {"hydra.run.dir": run_dir, "paths.data_dir": Path(cfg.paths.data_dir)})
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
    error = None
    try:
        result = get_task(str(cfg.task.value if hasattr(cfg.task, "value") else cfg.task))(cfg, ctx)
        ctx.add_metrics(result or {})
    except BaseException as exn:  # recorded (run.log, failed.json), then raised on: a sweep's job fails visibly
        error = exn
        log.error("run failed: %s: %s", type(exn).__name__, exn)
        raise
    finally:
        if is_zero:
            written = ctx.write_metrics(error)
            log.info("run folder: %s (%s, plots/, checkpoints/, run.log)", run_dir, written.name)
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
    from crossmodal.report import write_index, write_report

    try:
        log.info("report: %s", write_report(run_dir))
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            log.info("sweep index: %s", write_index(hydra_cfg.sweep.dir, job_reports="none"))
    except (OSError, ValueError) as exn:  # unwritable page, not a run folder: never lose a finished run to its page
        log.warning("could not write the report of %s (%s); retry with: crossmodal report %s", run_dir, exn, run_dir)


def _finish_wandb(loggers: list[Any], run_dir: Path | None) -> None:
    """Each run (and each sweep job) is its own W&B run: record which one in <run>/wandb_run.json
    (the sweep summary links to it) and close it before the next job starts."""
    from crossmodal.utils.figures import is_wandb

    if not any(is_wandb(lg) for lg in loggers):
        return
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
    except ValueError as exn:  # a config problem, a refused pickle or an unreadable model file: named, no traceback
        from crossmodal.models.modelfile import ModelFileError

        if not isinstance(exn, (ConfigError, ModelFileError)):
            raise
        log.error("%s", exn)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's composition errors reach us, to be said in one line (_explain)
    try:
        if args.cfg and not (args.help or args.hydra_help):
            show_config(args)
            return
        sys.argv = [sys.argv[0], *argv]  # Hydra (and Lightning's DDP launcher) read the command line there
        _hydra_main()
    except (ConfigError, ConfigCompositionException, OverrideParseException) as exn:
        if not isinstance(exn, ConfigError):
            exn = _explain(exn, list(args.overrides), [Path(args.config_dir).resolve()] if args.config_dir else [])
        print(f"Error: {exn}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


if __name__ == "__main__":
    main()
