"""Pseudo-pairs: a labelled speech corpus (EmoDB) paired with FER+ faces of the same emotion.

    python -m crossmodal.run experiment=pseudo_pairs prep.source=/data/emodb prep.ferplus=/data/ferplus

No audio-visual emotional corpus can be downloaded here, so each clip of an acted speech corpus gets
FER+ faces whose crowd majority is the clip's emotion: a controlled end-to-end check and a CPU demo,
NOT the paper's data (face and voice are different people), so the shards are marked
``synthetic: true`` (sample json and manifest). The keys: ``conf/prep/pseudo_pairs.yaml``.

- Only clips whose label maps onto a FER+ emotion are used (others: ``unmapped_label``).
- Each speaker gets a seeded pool of faces per emotion (:func:`face_pools`); a clip of duration d gets
  frames at ``frame_rate`` (times k / frame_rate < d), each drawn from its speaker's pool (native 48x48 PNG).
- With ``speaker_folds: k`` and ``fold: i`` the sorted speakers fall into k fixed groups: group i is
  ``unheard``, the first speaker of the next group is ``heard`` (model selection), the rest train.
- ``agreement: p`` < 1 (:func:`agreement_plan`) is recorded in the fingerprint, the manifest and the
  sample keys ``agreement``, ``face_emotion``, ``faces_agree``; p = 1 leaves fingerprint and shards as
  they always were. experiments/agreement/README.md gives the details and the why.

The samples are ordinary pair shards (``flac``, ``fNNN.png``, ``times.npy``, ``json`` with ``label``,
``corpus_label``, ``synthetic: true`` and the source paths), so extraction and online distillation
read them unchanged.
"""
from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.emotions import EMOTIONS
from crossmodal.io.audio import AudioError, load_audio
from crossmodal.io.splits import make_fold_split
from crossmodal.pipeline.fingerprint import input_fingerprint
from crossmodal.pipeline.pairs.build import build_shard_set, plan_jobs, plan_split, reuse_or_build
from crossmodal.pipeline.pairs.codec import make_pair_sample, segment_meta, slug
from crossmodal.pipeline.pairs.config import PairRecipe, settings_from_cfg
from crossmodal.pipeline.pairs.tracks import BuildStats, segment_bounds
from crossmodal.pipeline.parallel import skip_summary
from crossmodal.pipeline.shards import Manifest, SkipLog

log = logging.getLogger(__name__)

SETTINGS = (
    "corpus", "ferplus_splits", "faces_per_pool", "min_agreement", "frame_rate", "segment_seconds",
    "min_segment_seconds", "sample_rate", "clips_per_shard", "seed", "unheard_fraction", "heard_fraction",
)
FOLD_SETTINGS = ("speaker_folds", "fold")  # in the fingerprint only when speaker_folds is set

# The in-the-wild prior of face emotions for the clips whose faces disagree with the voice: the
# shipped teacher's mean softmax (T = 1) over the 143 face frames of the 11 GRID talking-face clips
# (experiments/agreement/prior.py; experiments/agreement/README.md says why this one).
IN_THE_WILD_PRIOR = {
    "neutral": 0.8875, "happiness": 0.0124, "surprise": 0.0412, "sadness": 0.0339,
    "anger": 0.0155, "disgust": 0.0014, "fear": 0.0029, "contempt": 0.0052,
}


@dataclass
class PseudoPairsConfig(PairRecipe):
    """Pseudo-pair data (``conf/data/pseudo_pairs.yaml``): build pair shards, then extract like real pairs."""

    # source: the speech corpus folder (EmoDB: <source>/wav/*.wav)
    ferplus: str | None = None  # the FER+ folder (FER2013Train/Valid/Test with label.csv, or the csv pair)
    corpus: str = "emodb"  # a reader of crossmodal.io.corpora
    ferplus_splits: list[str] = field(default_factory=lambda: ["val", "test"])
    faces_per_pool: int = 4  # FER+ faces per speaker and emotion
    min_agreement: float = 0.5  # majority share of a face's emotion votes
    heard_fraction: float = 0.1
    # speaker-fold cross-validation: k fixed groups of the sorted speakers, group `fold` unheard
    speaker_folds: int | None = None
    fold: int = 0
    agreement: float = 1.0
    agreement_prior: dict[str, float] | None = None
    min_segment_seconds: float = 0.5
    clips_per_shard: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.faces_per_pool < 1 or self.frame_rate <= 0 or self.min_segment_seconds > self.segment_seconds:
            raise ValueError(
                f"data.faces_per_pool={self.faces_per_pool}, data.frame_rate={self.frame_rate}, "
                f"data.min_segment_seconds={self.min_segment_seconds}, data.segment_seconds={self.segment_seconds}: "
                "need at least one face per pool, a positive frame rate and min <= segment length"
            )
        if isinstance(self.agreement, bool) or not isinstance(self.agreement, (int, float)) or not 0 <= self.agreement <= 1:
            raise ValueError(f"prep.agreement={self.agreement!r} (data.prepare.agreement in the distill/supervised experiments): "
                             "the fraction of each speaker's clips whose faces show the clip's emotion, a number in [0, 1] "
                             "(1 = every clip, the default)")
        self.agreement = float(self.agreement)
        if self.agreement_prior is not None:
            prior = dict(self.agreement_prior)
            bad = sorted(k for k, v in prior.items() if k not in EMOTIONS or isinstance(v, bool)
                         or not isinstance(v, (int, float)) or v < 0)
            if bad or sum(v > 0 for v in prior.values()) < 2:
                raise ValueError(f"prep.agreement_prior={prior!r}: non-negative weights of FER+ emotions "
                                 f"({', '.join(EMOTIONS)}), at least two of them positive, or null for the measured prior")
            self.agreement_prior = {k: float(v) for k, v in prior.items()}
        if self.speaker_folds is not None:
            if isinstance(self.speaker_folds, bool) or not isinstance(self.speaker_folds, int) or self.speaker_folds < 2:
                raise ValueError(f"data.prepare.speaker_folds={self.speaker_folds!r}: an integer >= 2 (e.g. 5), or null for "
                                 "the seed + fractions split")
            if isinstance(self.fold, bool) or not isinstance(self.fold, int) or not 0 <= self.fold < self.speaker_folds:
                raise ValueError(f"data.prepare.fold={self.fold!r}: one of 0..{self.speaker_folds - 1} "
                                 f"(data.prepare.speaker_folds={self.speaker_folds})")
            if self.split_file:
                raise ValueError(f"data.prepare.split_file={self.split_file} and data.prepare.speaker_folds={self.speaker_folds} "
                                 "both choose the speakers: set one of them (split_file=null or speaker_folds=null)")

    @property
    def dataset_name(self) -> str:
        return self.name or f"{slug(self.corpus)}_ferplus"

    def fingerprint(self) -> dict[str, Any]:
        """The speech corpus and FER+ listings, the split file and the settings that change the shards."""
        settings = {k: getattr(self, k) for k in SETTINGS}
        if self.speaker_folds is not None:  # the default split keeps the fingerprint it always had
            settings.update({k: getattr(self, k) for k in FOLD_SETTINGS})
        if self.agreement != 1.0:  # p = 1 keeps the fingerprint (and so the cached sets) it always had
            settings.update(agreement=self.agreement, agreement_prior=self.prior)
        settings["ferplus_splits"] = list(self.ferplus_splits)
        return input_fingerprint("pairs", sources={"source": self.source, "ferplus": self.ferplus, "split_file": self.split_file},
                                 settings={**settings, "pseudo_pairs": True})

    @property
    def prior(self) -> dict[str, float]:
        """The in-the-wild prior of disagreeing faces, normalised, in EMOTIONS order (zeros left out)."""
        prior = self.agreement_prior if self.agreement_prior is not None else IN_THE_WILD_PRIOR
        total = sum(prior.values())
        return {e: round(prior[e] / total, 6) for e in EMOTIONS if prior.get(e, 0) > 0}

    def prepare(self, rank: int | None = None, world_size: int | None = None, strict: bool | None = None) -> Manifest:
        return prepare_pseudo_pairs(self, rank=rank, world_size=world_size, strict=strict)


@dataclass(frozen=True)
class PseudoItem:
    speaker: str
    clip: str  # the clip's file stem (its "video")
    path: str
    label: str | None  # FER+ emotion, None when the corpus class has none
    corpus_label: str


def face_pools(
    faces: Sequence[Any], speakers: Sequence[str], emotions: Sequence[str], per_pool: int, seed: int
) -> tuple[dict[tuple[str, str], list[Any]], int]:
    """``{(speaker, emotion): [FER+ image, ...]}`` and how many pools had to share faces (deterministic in the
    seed and the sorted inputs; disjoint across speakers while there are enough faces of an emotion)."""
    by_emotion: dict[str, list[Any]] = defaultdict(list)
    for face in sorted(faces, key=lambda f: (f.split, f.name)):
        by_emotion[EMOTIONS[face.majority]].append(face)
    pools: dict[tuple[str, str], list[Any]] = {}
    shared = 0
    for emotion in sorted(emotions):
        candidates = by_emotion.get(emotion, [])
        if not candidates:
            raise ValueError(f"no FER+ face with majority {emotion!r} passes the filters (data.ferplus_splits, data.min_agreement)")
        rng = random.Random(f"pools-{seed}-{emotion}")
        order = rng.sample(candidates, len(candidates))
        disjoint = len(order) >= per_pool * len(speakers)
        for index, speaker in enumerate(sorted(speakers)):
            if disjoint:
                pools[(speaker, emotion)] = order[index * per_pool : (index + 1) * per_pool]
            else:
                pools[(speaker, emotion)] = rng.sample(order, min(per_pool, len(order)))
                shared += 1
    return pools, shared


def agreement_plan(items: Sequence[PseudoItem], agreement: float, prior: dict[str, float], seed: int) -> dict[tuple[str, str], str]:
    """``{(speaker, clip): face emotion}`` for every clip with a FER+ emotion: its own emotion for
    round(p x clips) of each speaker's clips (stratified by emotion), for the others an emotion drawn
    from ``prior`` without the clip's own. Deterministic in the seed and the (sorted) clips."""
    by_speaker: dict[str, dict[str, list[PseudoItem]]] = defaultdict(lambda: defaultdict(list))
    for item in sorted(items, key=lambda i: (i.speaker, i.clip)):
        if item.label is not None:
            by_speaker[item.speaker][item.label].append(item)
    plan: dict[tuple[str, str], str] = {}
    for speaker, groups in sorted(by_speaker.items()):
        rng = random.Random(f"agreement-{seed}-{speaker}")
        emotions = sorted(groups)
        total = sum(len(g) for g in groups.values())
        wanted = int(np.floor(agreement * total + 0.5))
        quota = {e: int(np.floor(agreement * len(groups[e]) + 1e-9)) for e in emotions}
        tiebreak = {e: rng.random() for e in emotions}
        by_remainder = sorted(emotions, key=lambda e: (-(agreement * len(groups[e]) - quota[e]), tiebreak[e]))
        for e in by_remainder[: max(0, wanted - sum(quota.values()))]:
            quota[e] += 1
        for emotion in emotions:
            clips = groups[emotion]
            agreeing = set(rng.sample(range(len(clips)), min(quota[emotion], len(clips))))
            for index, item in enumerate(clips):
                if index in agreeing:
                    plan[(speaker, item.clip)] = emotion
                else:
                    draw = random.Random(f"prior-{seed}-{speaker}-{item.clip}")
                    others = [e for e in prior if e != emotion]
                    plan[(speaker, item.clip)] = draw.choices(others, weights=[prior[e] for e in others])[0]
    return plan


def _clip_samples(
    item: PseudoItem, split: str, pool: list[Any], cfg: PseudoPairsConfig, skips: SkipLog, stats: BuildStats,
    face_emotion: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The clip's pair samples, faces drawn from ``pool`` (the speaker's faces of ``face_emotion``,
    the clip's own emotion unless the agreement plan says otherwise)."""
    from crossmodal.io.ferplus import load_ferplus_image

    if item.label is None:
        skips.skip("unmapped_label", item.path, f"{cfg.corpus} class {item.corpus_label!r} has no FER+ emotion")
        return
    try:
        wave = load_audio(item.path, cfg.sample_rate)
    except AudioError as exn:
        skips.skip(exn.reason, item.path, str(exn))
        return
    duration = len(wave) / cfg.sample_rate
    if duration < cfg.min_segment_seconds:
        skips.skip("too_short", item.path, f"{duration:.2f} s < min_segment_seconds={cfg.min_segment_seconds}")
        return
    rng = random.Random(f"frames-{cfg.seed}-{item.speaker}-{item.clip}")
    for index, (start, end) in enumerate(segment_bounds(0.0, duration, cfg.segment_seconds)):
        n_frames = int(np.ceil((end - start) * cfg.frame_rate - 1e-9))
        times = (np.arange(n_frames) / cfg.frame_rate).astype(np.float32)
        chosen = [rng.choice(pool) for _ in range(n_frames)]
        frames = [load_ferplus_image(face) for face in chosen]
        a, b = int(round(start * cfg.sample_rate)), int(round(end * cfg.sample_rate))
        meta = segment_meta(item.speaker, item.clip, "0", 0, index, split, start, cfg.frame_rate, synthetic=True,
                            label=item.label, corpus_label=item.corpus_label, corpus=cfg.corpus, source=item.path,
                            faces=[f"{face.split}/{face.name}" for face in chosen])
        if cfg.agreement != 1.0:  # p = 1 shards stay byte for byte as before (the fingerprint does too)
            face = face_emotion or item.label
            meta.update(agreement=cfg.agreement, face_emotion=face, faces_agree=face == item.label)
        stats.segments += 1
        stats.frames += n_frames
        stats.frames_sampled += n_frames
        yield make_pair_sample(f"{slug(item.speaker)}_{slug(item.clip)}_s{index:03d}", wave[a:b], cfg.sample_rate, frames,
                               times, meta, image_format="png")


def prepare_pseudo_pairs(
    cfg_data: Any, *, rank: int | None = None, world_size: int | None = None, strict: bool | None = None,
    out_dir: str | Path | None = None, named_by: str | None = None,
) -> Manifest:
    """Build (or reuse) the pseudo-pair shards of ``cfg_data`` (a PseudoPairsConfig, dict or config node)
    in the folder named from their fingerprint, or in ``out_dir`` (named by the config key ``named_by``)."""
    cfg = settings_from_cfg(PseudoPairsConfig, cfg_data, "pseudo-pair")
    return reuse_or_build(cfg, _build_pseudo_pairs, "pseudo-pair shard", bool(cfg.source and cfg.ferplus), rank=rank,
                          world_size=world_size, strict=strict, out_dir=out_dir, named_by=named_by)


def _build_pseudo_pairs(cfg: PseudoPairsConfig, out_dir: Path, fingerprint: dict[str, Any], rank: int, world_size: int,
                        strict: bool) -> Manifest:
    from crossmodal.io.corpora import read_corpus
    from crossmodal.io.ferplus import read_ferplus

    if not cfg.source:
        raise ValueError("data.source is not set: point it at the speech corpus folder (e.g. EmoDB)")
    if not cfg.ferplus:
        raise ValueError("data.ferplus is not set: point it at the FER+ folder (FER2013Train/Valid/Test with "
                         "label.csv)")
    unparsed: list[tuple[str, str]] = []  # files whose names the corpus reader could not parse
    clips = read_corpus(cfg.corpus, cfg.source, strict=cfg.strict, skipped=unparsed)
    items = [PseudoItem(c.speaker, Path(c.path).stem, str(c.path), c.emotion, c.corpus_label) for c in clips]
    faces = [f for f in read_ferplus(cfg.ferplus, splits=list(cfg.ferplus_splits), cleaning="cntk")
             if f.votes[f.majority] / max(1.0, float(np.sum(f.votes[: len(EMOTIONS)]))) >= cfg.min_agreement]
    speakers = sorted({i.speaker for i in items})
    emotions = sorted({i.label for i in items if i.label})
    plan: dict[tuple[str, str], str] = {}
    if cfg.agreement != 1.0:  # pools of the prior's emotions too (each emotion's pools do not depend on the others)
        plan = agreement_plan(items, cfg.agreement, cfg.prior, cfg.seed)
        emotions = sorted(set(emotions) | set(plan.values()))
    pools, shared = face_pools(faces, speakers, emotions, cfg.faces_per_pool, cfg.seed)
    folds = None  # with speaker_folds (split_file is then null)
    if cfg.speaker_folds is not None:
        try:
            folds = make_fold_split(speakers, cfg.speaker_folds, cfg.fold, seed=cfg.seed)
        except ValueError as exn:
            raise ValueError(f"{exn} ({len(speakers)} speakers in the corpus at {cfg.source})") from exn
    split, split_path = plan_split(cfg, [(i.speaker, i.clip) for i in items], out_dir, rank, folds)
    jobs = plan_jobs(items, split, cfg.clips_per_shard, key=lambda item: (item.speaker, item.clip))
    meta = {
        "kind": "pairs",
        "name": cfg.dataset_name,
        "fingerprint": fingerprint,
        "synthetic": True,
        "purpose": "pseudo-pairs: speech clips paired with FER+ faces of the clip's emotion (a controlled check, not in-the-wild data)",
        "corpus": cfg.corpus,
        "source": str(cfg.source),
        "ferplus": str(cfg.ferplus),
        "ferplus_splits": list(cfg.ferplus_splits),
        "faces_per_pool": cfg.faces_per_pool,
        "shared_pools": shared,
        "split_file": str(split_path),
        "split_source": split.source,
        "speaker_folds": cfg.speaker_folds,
        "fold": cfg.fold if cfg.speaker_folds is not None else None,
        "unheard_speakers": sorted(split.unheard),
        "validation_speakers": sorted(split.validation),
        "frame_rate": cfg.frame_rate,
        "sample_rate": cfg.sample_rate,
        "crop_size": 48,
        "grey": True,
        "segment_seconds": cfg.segment_seconds,
        "items": len(items),
        "unparsed_files": {"count": len(unparsed), "examples": [path for path, _ in unparsed[:5]]},
        "agreement": cfg.agreement,
    }
    if plan:
        by_item = {(i.speaker, i.clip): i.label for i in items}
        meta["agreement_prior"] = cfg.prior
        meta["agreeing_clips"] = {
            speaker: {"clips": sum(1 for (s, _) in plan if s == speaker),
                      "agreeing": sum(1 for (s, c), e in plan.items() if s == speaker and e == by_item[(s, c)])}
            for speaker in sorted({s for s, _ in plan})
        }
        meta["purpose"] = (f"pseudo-pairs: speech clips paired with FER+ faces, {cfg.agreement:g} of each speaker's clips "
                           "with faces of the clip's emotion, the others with faces of an in-the-wild prior "
                           "(a controlled check, not in-the-wild data)")

    def samples_of(item: PseudoItem, which: str, skips: SkipLog, stats: BuildStats) -> Iterator[dict[str, Any]]:
        face_emotion = plan.get((item.speaker, item.clip), item.label)
        pool = pools.get((item.speaker, face_emotion), []) if item.label else []
        return _clip_samples(item, which, pool, cfg, skips, stats, face_emotion)

    manifest = build_shard_set(out_dir, jobs, samples_of, meta, num_workers=cfg.num_workers, strict=strict,
                               desc="pseudo-pair shards", rank=rank, world_size=world_size)
    stats = manifest.meta.get("stats") or {}
    log.info("pseudo-pairs: %d segments (%s), %d faces -> %s; %s", stats.get("segments", 0),
             {s: manifest.count(s) for s in ("train", "heard", "unheard")}, stats.get("frames", 0), out_dir, skip_summary(manifest))
    return manifest
