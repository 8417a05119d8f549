"""Distillation shard sets: how they are named, found and built on first use.

A set is named ``<data_dir>/distill/<pairs name>-<teacher name>-<fingerprint8>``, the fingerprint covering the pair
set's inputs, the teacher file's sha256 and the extraction settings, so ``experiment=distill_* teacher_ckpt=T``
finds the set that T made (:func:`find_distill_set`); :func:`prepare_shards` builds a ``data.prepare`` recipe's.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from crossmodal.models.loading import load_teacher, teacher_digest, teacher_file, teacher_name
from crossmodal.models.teacher_int8 import int8_fingerprint, resolve_precision
from crossmodal.pipeline.cache import CacheMismatch, claim, find_sets
from crossmodal.pipeline.extract import extract_logits
from crossmodal.pipeline.fingerprint import describe, input_fingerprint, shard_folder
from crossmodal.pipeline.pseudo_pairs import PseudoPairsConfig

log = logging.getLogger(__name__)


def distill_fingerprint(
    pairs_fingerprint: dict[str, Any] | None, teacher: str | Path | None, *, logits_dtype: str = "float16",
    pairs_root: str | Path | None = None, precision: str = "auto",
) -> dict[str, Any]:
    """What distillation shards are built from: the pair set's fingerprint, the teacher file's bytes
    (None: the shipped teacher), its precision (``auto``: int8, the CPU's; an int8 set records its int8
    form's digest, an fp32 set nothing, as before precision existed) and the extraction settings. A pair
    set without a fingerprint (made by hand) stands in by its resolved folder."""
    pairs = pairs_fingerprint or ({"kind": "pairs", "folder": str(Path(pairs_root).resolve())} if pairs_root else None)
    settings: dict[str, Any] = {"logits_dtype": logits_dtype}
    if resolve_precision(precision) == "int8":
        settings |= {"teacher_precision": "int8", "teacher_int8": int8_fingerprint(teacher_file(teacher))["digest"]}
    return input_fingerprint("distill", teacher=teacher_file(teacher), settings=settings, inputs={"pairs": pairs})


def distill_folder(data_dir: str | Path, pairs_name: str, teacher: str | Path | None, fingerprint: dict[str, Any]) -> Path:
    """``<data_dir>/distill/<pairs name>-<teacher name>-<digest8>``."""
    return shard_folder(data_dir, "distill", f"{pairs_name}-{teacher_name(teacher)}", fingerprint)


def extract_command(source: str | None, teacher: str | None, data_dir: str | Path) -> str:
    parts = ["python -m crossmodal.run experiment=extract_logits", f"prep.source={source or '/path/to/talking-face/videos'}"]
    if teacher:
        parts.append(f"teacher_ckpt={teacher}")
    parts.append(f"paths.data_dir={data_dir}")
    return " ".join(parts)


def find_distill_set(data_dir: str | Path, teacher: str | None, source: str | None, precision: str = "auto") -> Path:
    """The distillation set under ``<data_dir>/distill`` made with this teacher file (and from
    ``source`` when given): what ``task=extract`` wrote, found without a path key. Of several, the one of the
    teacher ``precision`` (``auto``: this machine's) when exactly one is."""
    kind_dir = Path(data_dir) / "distill"
    digest = teacher_digest(teacher)
    wanted = str(Path(source).resolve()) if source else None

    def pairs_source(fp: dict[str, Any]) -> str | None:
        listing = ((fp.get("inputs") or {}).get("pairs") or {}).get("sources", {}).get("source")
        return listing["path"] if listing else None

    def accept(fp: dict[str, Any]) -> bool:
        return (fp.get("kind") == "distill" and (fp.get("teacher") or {}).get("sha256") == digest
                and (wanted is None or pairs_source(fp) == wanted))

    found = find_sets(kind_dir, accept)
    who = f"teacher {teacher_file(teacher)} (sha256 {digest[:12]})" + (f" on data.source={wanted}" if wanted else "")
    if not found:
        others = find_sets(kind_dir, lambda fp: fp.get("kind") == "distill")
        seen = "".join(f"\n  {folder} ({describe(fp)})" for folder, fp in others[:10])
        raise FileNotFoundError(
            f"no distillation shards of {who} in {kind_dir}. Extract them first:\n  {extract_command(source, teacher, data_dir)}"
            + (f"\nSets there (other teachers or sources):{seen}" if seen else "")
            + "\nor point data.shards at a distillation shard set"
        )
    def precision_of(fp: dict[str, Any]) -> str:
        return fp["settings"].get("teacher_precision", "fp32")

    mine = [(folder, fp) for folder, fp in found if precision_of(fp) == resolve_precision(precision)]
    if len(found) > 1 and len(mine) == 1:
        found = mine
    if len(found) > 1:
        listing = "".join(f"\n  {folder}  (data.source={pairs_source(fp)}, teacher precision "
                          f"{precision_of(fp)})" for folder, fp in found)
        raise ValueError(f"{len(found)} distillation sets of {who} in {kind_dir}:{listing}\n"
                         "Say which with data.source=<the videos they were extracted from> (or data.shards=<folder>)")
    folder, fp = found[0]
    if wanted:  # the videos may have changed since the extraction
        recorded = fp["inputs"]["pairs"]["sources"]["source"]
        now = input_fingerprint("listing", sources={"source": wanted})["sources"]["source"]
        if recorded.get("listing_sha256") != now["listing_sha256"]:
            raise CacheMismatch(
                f"{folder} was extracted from {wanted} when it held {recorded['files']} files; it now holds {now['files']} "
                f"(or they changed). Extract again:\n  {extract_command(source, teacher, data_dir)}"
            )
    log.info("distillation shards of %s: %s", who, folder)
    return folder


def recipe_config(recipe: dict[str, Any], teacher: str | None, data_dir: str | Path) -> tuple[Any, str | None]:
    """``data.prepare`` (a pseudo-pairs recipe) -> (PseudoPairsConfig, teacher file or None)."""
    recipe = dict(recipe)
    kind = recipe.pop("kind", "pseudo_pairs")
    if kind != "pseudo_pairs":
        raise ValueError(f"data.prepare.kind={kind!r}: only 'pseudo_pairs' is built automatically; "
                         "write other shards with task=prepare / task=extract")
    teacher = recipe.pop("teacher", teacher)
    source = recipe.pop("emodb", None) or recipe.pop("source", None)
    recipe.setdefault("data_dir", str(data_dir))
    for key, value in (("data.emodb", source), ("data.ferplus", recipe.get("ferplus"))):
        if not value or not Path(value).exists():
            raise FileNotFoundError(
                f"{key}={value}: the pseudo-pairs of data.prepare are built from the raw corpus there; "
                f"set {key}=<folder> (EmoDB: the folder with wav/; FER+: FER2013Train/Valid/Test with label.csv)"
            )
    return PseudoPairsConfig(source=str(source), **recipe), teacher


def prepare_shards(
    shards: str | Path, mode: str, recipe: dict[str, Any], *, fingerprint: dict[str, Any] | None = None,
    named_by: str | None = None, strict: bool = False, teacher: str | None = None, data_dir: str | Path = "data",
) -> None:
    """Build a missing shard set from the pseudo-pairs ``recipe`` (the first use of an experiment prepares its
    data): pair shards in ``<data_dir>/pairs/<name>-<fingerprint8>`` (reused when there), then in ``cached``
    mode the teacher's logits (``teacher``: a file, None = the shipped CPU teacher, at the precision
    ``fingerprint`` records) into ``shards``; in ``online``/``labels`` mode the pair shards go into ``shards``.
    """
    from crossmodal.pipeline.pseudo_pairs import prepare_pseudo_pairs

    config, teacher = recipe_config(recipe, teacher, data_dir)
    shards = Path(shards)
    log.info("pseudo-pair shards for %s: %s", shards, config.pairs_dir)
    # Lightning calls prepare_data on one process per node while the others wait in its own
    # barrier: build as a single writer (rank 0 of 1), never through a collective here.
    if mode in ("online", "labels"):
        prepare_pseudo_pairs(config, rank=0, world_size=1, strict=strict, out_dir=shards, named_by=named_by)
        return
    fingerprint = fingerprint or distill_fingerprint(config.fingerprint(), teacher, logits_dtype=config.logits_dtype)
    if claim(shards, fingerprint, strict=strict, named_by=named_by, what="distillation shard set", write_stamp=False):
        return
    pairs = prepare_pseudo_pairs(config, rank=0, world_size=1, strict=strict)
    log.info("extracting teacher logits (%s) into %s", teacher_file(teacher), shards)
    precision = fingerprint["settings"].get("teacher_precision", "fp32")
    extract_logits(pairs, shards, load_teacher(teacher, precision=precision), teacher_name=teacher_name(teacher),
                   teacher_id=teacher_digest(teacher), fingerprint=fingerprint, named_by=named_by, strict=strict,
                   logits_dtype=config.logits_dtype)
