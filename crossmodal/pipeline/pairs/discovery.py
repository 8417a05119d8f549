"""Finding the talking-face data of ``data.source``: the three layouts (VoxCeleb1 wav + face-frame
folders, VoxCeleb2 mp4, plain video folders), told apart by :func:`detect_layout`, and the
:class:`PairItem` (one utterance or video) each file becomes, in a fixed order."""
from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from crossmodal.pipeline.pairs.codec import slug
from crossmodal.pipeline.pairs.config import PairSettings

VIDEO_EXTENSIONS = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PairItem:
    """One utterance/video of the source: the unit that becomes one or more segments."""

    kind: str  # "video" | "centred_video" | "frames" | "orphan_frames"
    identity: str
    video: str
    utterance: str
    media: str  # the video file, or the wav for voxceleb1
    audio: str | None = None  # a separate audio file (voxceleb2 .m4a), when present
    frames_dir: str | None = None  # voxceleb1 face-frame folder

    @property
    def key(self) -> str:
        return "_".join(slug(p) for p in (self.identity, self.video, self.utterance))


Listing = tuple[list[tuple[str, ...]], set[str]]  # list_media's answer


def detect_layout(source: Path, frames_root: str | None, listing: Listing | None = None) -> str:
    """``voxceleb1`` (wav/ + face frames), ``voxceleb2`` (every video at <idNNN>/<video>/<n>.ext) or
    ``videos``; ``listing``: the source's :func:`list_media`, when the caller has it already."""
    if (source / "wav").is_dir():
        if not frames_root:
            raise ValueError(
                f"{source} looks like VoxCeleb1 (it has wav/) but data.frames_root is not set: point it at the "
                "face-frame folder (<frames_root>/<id>/<youtube_id>/<n>/*.jpg), or set data.layout=videos"
            )
        return "voxceleb1"
    videos, _ = listing or list_media(source)
    if videos and all(len(parts) == 3 and re.fullmatch(r"id\d+", parts[0]) for parts in videos):
        return "voxceleb2"
    return "videos"


def list_media(root: Path) -> Listing:
    """One walk of ``root`` (os.scandir; as Path.rglob, symlinked folders are not followed and unreadable
    ones are passed over): the video files as relative path parts, sorted as paths sort, and the
    relative paths of the .m4a files."""
    videos: list[tuple[str, ...]] = []
    m4a: set[str] = set()
    folders: list[tuple[tuple[str, ...], str]] = [((), str(root))]
    while folders:
        parts, folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except PermissionError as exn:
            log.warning("data.source: cannot read %s (%s); its files are left out", folder, exn)
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(((*parts, entry.name), entry.path))
                continue
            suffix = os.path.splitext(entry.name)[1].lower()
            if suffix in VIDEO_EXTENSIONS and entry.is_file():
                videos.append((*parts, entry.name))
            elif suffix == ".m4a" and entry.is_file():
                m4a.add("/".join((*parts, entry.name)))
    return sorted(videos), m4a


def discover(cfg: PairSettings) -> tuple[str, list[PairItem]]:
    """The items of the source, in a fixed order, and the layout used."""
    if not cfg.source:
        raise ValueError("data.source is not set: point it at a folder of talking-face data (or data.pairs at pair shards)")
    source = Path(cfg.source)
    if not source.is_dir():
        raise FileNotFoundError(f"data.source={source} is not a folder")
    listing = None if cfg.layout == "voxceleb1" or (source / "wav").is_dir() else list_media(source)
    layout = cfg.layout if cfg.layout != "auto" else detect_layout(source, cfg.frames_root, listing)
    if layout == "voxceleb1":
        items = _discover_voxceleb1(source, cfg.frames_root)
    else:
        videos, m4a = listing or list_media(source)
        kind = "centred_video" if layout == "voxceleb2" else "video"
        items = []
        prefix = "" if str(source) == "." else str(source).rstrip(os.sep) + os.sep  # as str(source / relative)
        for parts in videos:
            stem = os.path.splitext(parts[-1])[0]
            if len(parts) == 1:
                identity, video, utterance = stem, stem, "0"
            elif len(parts) == 2:
                identity, video, utterance = parts[0], stem, "0"
            else:
                identity, video, utterance = parts[0], parts[-2], stem
            relative = "/".join(parts)
            audio_name = relative[: len(relative) - len(parts[-1])] + stem + ".m4a"
            audio = prefix + audio_name if layout == "voxceleb2" and audio_name in m4a else None
            items.append(PairItem(kind, identity, video, utterance, prefix + relative, audio))
    if not items:
        raise FileNotFoundError(f"no talking-face data found in data.source={source} (layout {layout}); see crossmodal.pipeline.pairs")
    keys = Counter(item.key for item in items)
    duplicated = [k for k, n in keys.items() if n > 1]
    if duplicated:
        raise ValueError(f"two source files map to the same sample key {duplicated[0]!r} in {source}; rename one of them")
    return layout, items


def _discover_voxceleb1(source: Path, frames_root: str | None) -> list[PairItem]:
    if not frames_root:
        raise ValueError("data.layout=voxceleb1 needs data.frames_root (the folder of <id>/<youtube_id>/<n>/*.jpg)")
    frames = Path(frames_root)
    if not frames.is_dir():
        raise FileNotFoundError(f"data.frames_root={frames} is not a folder")
    items: dict[tuple[str, str, str], PairItem] = {}
    for wav in sorted((source / "wav").rglob("*.wav")):
        parts = wav.relative_to(source / "wav").parts
        if len(parts) != 3:
            continue
        identity, video, utterance = parts[0], parts[1], wav.stem
        folder = frames / identity / video / utterance
        items[(identity, video, utterance)] = PairItem("frames", identity, video, utterance, str(wav), frames_dir=str(folder))
    for folder in sorted(p for p in frames.glob("*/*/*") if p.is_dir()):
        identity, video, utterance = folder.relative_to(frames).parts
        if (identity, video, utterance) not in items:
            items[(identity, video, utterance)] = PairItem("orphan_frames", identity, video, utterance, str(folder), frames_dir=str(folder))
    return [items[k] for k in sorted(items)]
