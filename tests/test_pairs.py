"""Pair shards from real talking-face data: GRID videos, a VoxCeleb1 layout built from the real
VoxCeleb1 utterances plus face frames cut from GRID video, a VoxCeleb2-style tree; identity splits."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from crossmodal.io.audio import decode_flac
from crossmodal.io.skips import BadSampleError
from crossmodal.io.splits import IdentitySplit, load_split_file, make_split, save_split
from crossmodal.io.video import sample_frames
from crossmodal.pipeline.pairs import PairsConfig, decode_pair_frames, prepare_pairs

pytest.importorskip("cv2")

GRID_CLIPS = ("bbaf2n.mpg", "brbk7n.mpg", "swiz3n.mpg")


def read_samples(path: str) -> list[dict]:
    from crossmodal.pipeline.shards import iter_shard

    return list(iter_shard(path))


def all_samples(manifest) -> list[dict]:
    return [s for p in manifest.paths() for s in read_samples(p)]


def grid_folder(grid_root: Path, dest: Path, clips=GRID_CLIPS) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        os.symlink(grid_root / clip, dest / clip)
    return dest


def test_grid_videos_to_pair_shards(grid_root: Path, tmp_path: Path) -> None:
    source = grid_folder(grid_root, tmp_path / "grid")
    cfg = PairsConfig(source=str(source), data_dir=str(tmp_path / "data"), unheard_fraction=0.34, videos_per_shard=2)
    manifest = prepare_pairs(cfg)
    assert manifest.meta["layout"] == "videos" and manifest.total == 3
    assert {Path(p).name.split("-")[0] for p in manifest.paths()} == {"train", "unheard"}
    assert manifest.meta["stats"]["frames_no_face"] == 0 and manifest.meta["stats"]["frames"] == 39
    for sample in all_samples(manifest):
        meta = json.loads(sample["json"])
        frames, times = decode_pair_frames(sample)
        wave, rate = decode_flac(sample["flac"])
        assert rate == 16000 and meta["synthetic"] is False and meta["split"] in sample["__url__"]
        assert frames.shape == (13, 112, 112) and frames.dtype == np.uint8
        np.testing.assert_allclose(times, np.arange(13) * 0.24, atol=1e-5)
        # The segment's audio covers every frame time: ~3 s of GRID speech.
        assert times[-1] < len(wave) / rate <= 3.2 and meta["duration"] == pytest.approx(len(wave) / rate, abs=1e-3)
        assert meta["identity"] == Path(meta["source"]).stem and "." not in sample["__key__"]
    split = load_split_file(manifest.meta["split_file"])
    assert len(split.unheard) == 1
    # A re-run reuses every shard; a changed recipe gets its own folder, or is refused in a named one.
    mtimes = {p: os.stat(p).st_mtime_ns for p in manifest.paths()}
    again = prepare_pairs(cfg)
    assert {p: os.stat(p).st_mtime_ns for p in again.paths()} == mtimes
    assert manifest.meta["fingerprint"]["digest"][:8] in manifest.root.name
    changed = PairsConfig(**{**cfg.__dict__, "segment_seconds": 1.0})
    assert changed.pairs_dir != manifest.root and changed.pairs_dir.parent == manifest.root.parent
    with pytest.raises(ValueError, match=r"(?s)in the folder: pairs .*this run: .*settings.segment_seconds: 10.0 -> 1.0"):
        prepare_pairs(PairsConfig(**{**changed.__dict__, "pairs": str(manifest.root)}))


def test_long_video_is_cut_into_segments(grid_root: Path, tmp_path: Path) -> None:
    source = grid_folder(grid_root, tmp_path / "grid", clips=GRID_CLIPS[:1])
    cfg = PairsConfig(source=str(source), data_dir=str(tmp_path / "data"), segment_seconds=1.0, min_segment_seconds=0.5,
                      unheard_fraction=0.0)
    samples = all_samples(prepare_pairs(cfg))
    starts = [json.loads(s["json"])["start"] for s in samples]
    # The face track ends with the audio (2.98 s): 3 equal pieces of ~0.99 s, 4-5 frames each.
    assert len(samples) == 3 and starts == sorted(starts)
    for sample in samples:
        frames, times = decode_pair_frames(sample)
        wave, _ = decode_flac(sample["flac"])
        assert 4 <= len(frames) <= 5 and times.min() >= 0 and times.max() < len(wave) / 16000


def _silent_video(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(30):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_bad_inputs_are_counted_with_paths(grid_root: Path, tmp_path: Path) -> None:
    source = grid_folder(grid_root, tmp_path / "grid", clips=GRID_CLIPS[:1])
    (source / "corrupt.mp4").write_bytes(b"\x00\x01junk" * 100)
    _silent_video(source / "silent.mp4")
    sf.write(source / "voice_only.wav", np.zeros(16000, np.float32), 16000)
    os.rename(source / "voice_only.wav", source / "voice_only.mkv")  # audio with no video
    cfg = PairsConfig(source=str(source), data_dir=str(tmp_path / "data"), unheard_fraction=0.0)
    manifest = prepare_pairs(cfg)
    counts, examples = manifest.skipped["counts"], manifest.skipped["examples"]
    assert counts == {"unreadable_video": 1, "no_audio_stream": 1, "no_video_stream": 1}
    assert examples["unreadable_video"] == [str(source / "corrupt.mp4")]
    assert manifest.total == 1
    with pytest.raises(BadSampleError, match="corrupt.mp4"):
        prepare_pairs(PairsConfig(**{**cfg.__dict__, "data_dir": str(tmp_path / "strict"), "strict": True}))


def _voxceleb1_tree(grid_root: Path, voxceleb1_root: Path, root: Path) -> tuple[Path, Path]:
    """wav/<id>/<yt>/<n>.wav from the real utterances; <frames>/<id>/<yt>/<n>/NNNNNNN.jpg from GRID video."""
    wavs = sorted((voxceleb1_root / "testfiles").rglob("*.wav"))
    assert len(wavs) == 3
    frames_root = root / "frames"
    grid_frames = [image for _, image in sample_frames(grid_root / "bbaf2n.mpg", frame_rate=25.0)]
    for number, wav in enumerate(wavs):
        youtube_id, utterance = wav.stem.rsplit("_", 1)
        identity = f"id1000{number}"
        target = root / "wav" / identity / youtube_id / f"{utterance[-5:]}.wav"
        target.parent.mkdir(parents=True)
        shutil.copy(wav, target)
        folder = frames_root / identity / youtube_id / utterance[-5:]
        folder.mkdir(parents=True)
        for index, image in enumerate(grid_frames):
            # 224x224 face-centred frames, numbered by frame index like the released dense frames.
            Image.fromarray(image[32:256, 68:292]).save(folder / f"{index + 1:07d}.jpg", quality=90)
    return root, frames_root


def test_voxceleb1_layout(grid_root: Path, voxceleb1_root: Path, tmp_path: Path) -> None:
    root, frames_root = _voxceleb1_tree(grid_root, voxceleb1_root, tmp_path / "vox1")
    (sorted(frames_root.rglob("*.jpg"))[6]).write_bytes(b"not a jpeg")  # a corrupt frame (one that is sampled)
    orphan = frames_root / "id10009" / "someVideo" / "00001"
    shutil.copytree(next(p for p in frames_root.glob("*/*/*") if p.is_dir()), orphan)
    lonely = root / "wav" / "id10008" / "otherVideo" / "00003.wav"
    lonely.parent.mkdir(parents=True)
    shutil.copy(next((voxceleb1_root / "testfiles").rglob("*.wav")), lonely)
    cfg = PairsConfig(source=str(root), frames_root=str(frames_root), data_dir=str(tmp_path / "data"), unheard_fraction=0.0)
    manifest = prepare_pairs(cfg)
    assert manifest.meta["layout"] == "voxceleb1"
    assert manifest.skipped["counts"] == {"frames_without_audio": 1, "audio_without_frames": 1}
    assert manifest.skipped["examples"]["frames_without_audio"] == [str(orphan)]
    assert manifest.meta["stats"]["frames_corrupt"] == 1
    samples = all_samples(manifest)
    assert len(samples) == 3
    for sample in samples:
        meta = json.loads(sample["json"])
        frames, times = decode_pair_frames(sample)
        wave, _ = decode_flac(sample["flac"])
        assert meta["identity"].startswith("id1000") and sample["__key__"].startswith(meta["identity"])
        assert frames.shape[1:] == (112, 112) and len(frames) in (12, 13)  # 3 s of frames at 25/6 fps
        assert times[-1] < len(wave) / 16000 <= 3.2  # the face track bounds the segment, not the 8-11 s wav
        assert meta["frames_source"].endswith(meta["utterance"])


def test_voxceleb2_layout(grid_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "vox2"
    for number, clip in enumerate(GRID_CLIPS[:2]):
        target = root / f"id0000{number}" / "ytVideo" / "00001.mp4"
        target.parent.mkdir(parents=True)
        os.symlink(grid_root / clip, target)  # MPEG-PS named .mp4: ffmpeg probes the content
    # The first one also has its audio as a separate .m4a (48 kHz stereo AAC), which is preferred.
    from crossmodal.io.audio import load_audio

    voice = load_audio(grid_root / GRID_CLIPS[0], sample_rate=48000)
    m4a = root / "id00000" / "ytVideo" / "00001.m4a"
    with av.open(str(m4a), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=48000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.stack([voice, voice]), format="fltp", layout="stereo")
        frame.sample_rate = 48000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    manifest = prepare_pairs(PairsConfig(source=str(root), data_dir=str(tmp_path / "data"), unheard_fraction=0.5))
    assert manifest.meta["layout"] == "voxceleb2" and manifest.total == 2
    samples = {s["__key__"]: s for s in all_samples(manifest)}
    assert sorted(samples) == ["id00000_ytVideo_00001_s000", "id00001_ytVideo_00001_s000"]
    first = json.loads(samples["id00000_ytVideo_00001_s000"]["json"])
    assert first["audio_source"] == str(m4a) and "audio_source" not in json.loads(samples["id00001_ytVideo_00001_s000"]["json"])
    from_m4a, _ = decode_flac(samples["id00000_ytVideo_00001_s000"]["flac"])
    from_video = load_audio(grid_root / GRID_CLIPS[0])
    # The same speech, up to the AAC encoder's priming delay (tens of ms).
    best = max(np.corrcoef(from_m4a[4000 + lag : 30000 + lag], from_video[4000:30000])[0, 1] for lag in range(0, 1200, 2))
    assert best > 0.9


def test_split_round_trip_and_guarantees(tmp_path: Path) -> None:
    videos = [(f"id{i:05d}", f"v{j}") for i in range(40) for j in range(1 + i % 3)]
    split = make_split(videos, seed=3, unheard_fraction=0.25, heard_fraction=0.2)
    identities = {i for i, _ in videos}
    assert len(split.unheard) == 10
    path = save_split(split, tmp_path / "splits.json", identities)
    loaded = load_split_file(path)
    assert (loaded.unheard, loaded.heard, loaded.seed) == (split.unheard, split.heard, 3)
    saved = json.loads(path.read_text())
    assert not set(saved["train"]) & set(saved["unheard"]) and set(saved["train"]) | set(saved["unheard"]) == identities
    assignments = {(i, v): split.assign(i, v) for i, v in videos}
    train_ids = {i for (i, _), s in assignments.items() if s == "train"}
    unheard_ids = {i for (i, _), s in assignments.items() if s == "unheard"}
    heard_ids = {i for (i, _), s in assignments.items() if s == "heard"}
    assert split.heard and not train_ids & unheard_ids and heard_ids <= train_ids
    assert make_split(videos, seed=3, unheard_fraction=0.25, heard_fraction=0.2).unheard == split.unheard
    assert make_split(videos, seed=4, unheard_fraction=0.25, heard_fraction=0.2).unheard != split.unheard
    # The text form a user may write (PINs-style identity lists).
    (tmp_path / "mine.txt").write_text("# my split\nunheard id00001\nid00002 unheard\nheard id00005/v1\ntrain id00005\n")
    text = load_split_file(tmp_path / "mine.txt")
    assert text.unheard == {"id00001", "id00002"} and text.heard == {"id00005/v1"}
    (tmp_path / "bad.txt").write_text("unheard id1\ntrain id1\n")
    with pytest.raises(ValueError, match="both train and unheard"):
        load_split_file(tmp_path / "bad.txt")


def test_user_split_file_decides_the_shards(grid_root: Path, tmp_path: Path) -> None:
    source = grid_folder(grid_root, tmp_path / "grid")
    (tmp_path / "split.txt").write_text("unheard swiz3n\n")
    manifest = prepare_pairs(PairsConfig(source=str(source), data_dir=str(tmp_path / "data"), split_file=str(tmp_path / "split.txt")))
    by_split = {json.loads(s["json"])["identity"]: Path(s["__url__"]).name.split("-")[0] for s in all_samples(manifest)}
    assert by_split == {"bbaf2n": "train", "brbk7n": "train", "swiz3n": "unheard"}
    assert isinstance(load_split_file(manifest.meta["split_file"]), IdentitySplit)


# ------------------------------------------------------------------------------------ pseudo-pairs

EMODB_CLIPS = ("03a01Fa", "03a01Wa", "03a02Ta", "03a04Lc", "08a01Ab", "08a01Fd", "08a02Ac", "10a01Ac", "10a02Ab", "10a01Wa")


def test_pseudo_pairs_on_emodb(emodb_root: Path, ferplus_root: Path, tmp_path: Path) -> None:
    from crossmodal.emotions import EMOTIONS
    from crossmodal.io.ferplus import read_ferplus
    from crossmodal.pipeline.pseudo_pairs import PseudoPairsConfig, prepare_pseudo_pairs

    corpus = tmp_path / "emodb" / "wav"
    corpus.mkdir(parents=True)
    for stem in EMODB_CLIPS:
        assert (emodb_root / "wav" / f"{stem}.wav").exists(), stem
        os.symlink(emodb_root / "wav" / f"{stem}.wav", corpus / f"{stem}.wav")
    cfg = PseudoPairsConfig(source=str(corpus.parent), ferplus=str(ferplus_root), data_dir=str(tmp_path / "data"),
                            unheard_fraction=0.34, heard_fraction=0.0, faces_per_pool=3, ferplus_splits=["test"])
    manifest = prepare_pseudo_pairs(cfg)
    assert manifest.meta["synthetic"] is True and "not in-the-wild" in manifest.meta["purpose"]
    assert manifest.skipped["counts"] == {"unmapped_label": 1}  # 03a04Lc: boredom has no FER+ emotion
    majority = {f"{f.split}/{f.name}": EMOTIONS[f.majority] for f in read_ferplus(ferplus_root, splits=["test"])}
    pools: dict[tuple[str, str], set[str]] = {}
    splits_of: dict[str, set[str]] = {}
    samples = all_samples(manifest)
    assert len(samples) == 9
    for sample in samples:
        meta = json.loads(sample["json"])
        frames, times = decode_pair_frames(sample)
        wave, rate = decode_flac(sample["flac"])
        assert meta["synthetic"] is True and meta["corpus"] == "emodb"
        assert frames.shape[1:] == (48, 48) and all(k.endswith(".png") for k in sample if k.startswith("f0"))
        # Frames cover the clip at 25/6 fps and every face shows the clip's emotion.
        assert len(frames) == int(np.ceil(len(wave) / rate * cfg.frame_rate - 1e-9)) and times[-1] < len(wave) / rate
        assert {majority[face] for face in meta["faces"]} == {meta["label"]}
        pools.setdefault((meta["identity"], meta["label"]), set()).update(meta["faces"])
        splits_of.setdefault(meta["identity"], set()).add(meta["split"])
    assert all(len(faces) <= 3 for faces in pools.values())  # a consistent pool per speaker and emotion
    by_emotion: dict[str, list[set[str]]] = {}
    for (_, emotion), faces in pools.items():
        by_emotion.setdefault(emotion, []).append(faces)
    for emotion, groups in by_emotion.items():  # different speakers, different faces
        assert sum(len(g) for g in groups) == len(set().union(*groups)), emotion
    assert sorted(s for splits in splits_of.values() for s in splits) == ["train", "train", "unheard"]
    assert all(len(s) == 1 for s in splits_of.values())  # speaker-independent


def test_audio_is_aligned_to_the_first_video_frame() -> None:
    from crossmodal.pipeline.pairs import align_audio_to_video

    wave = np.arange(10, dtype=np.float32)
    assert align_audio_to_video(wave, 0.0, 10).tolist() == wave.tolist()
    assert align_audio_to_video(wave, 0.2, 10).tolist()[:3] == [0.0, 0.0, 0.0]  # audio starts late: pad
    assert align_audio_to_video(wave, -0.2, 10).tolist()[0] == 2.0  # audio starts early: trim


def test_an_unreadable_audio_video_offset_is_a_counted_skip(grid_root: Path, tmp_path: Path, monkeypatch) -> None:
    """av_offset never guesses 0 for a file it cannot read: it raises, and the pair build counts the
    video as skipped with that reason instead of shifting its audio by an unknown amount."""
    from crossmodal.io.video import VideoError
    from crossmodal.pipeline.pairs import av_offset, tracks

    voice = tmp_path / "voice.flac"
    sf.write(voice, np.zeros(1600, np.float32), 16000)
    with pytest.raises(VideoError, match="no audio or no video stream") as info:
        av_offset(str(voice))
    assert info.value.reason == "unknown_av_offset"
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoError, match="junk.mp4: cannot read the audio/video start times"):
        av_offset(str(tmp_path / "junk.mp4"))
    assert av_offset(str(grid_root / GRID_CLIPS[0])) == pytest.approx(0.0, abs=0.1)  # a readable file: its offset

    def unreadable(path: str) -> float:
        raise VideoError(f"{path}: cannot read the audio/video start times (test)", reason="unknown_av_offset")

    monkeypatch.setattr(tracks, "av_offset", unreadable)
    source = grid_folder(grid_root, tmp_path / "grid", clips=GRID_CLIPS[:2])
    manifest = prepare_pairs(PairsConfig(source=str(source), data_dir=str(tmp_path / "data")))
    assert manifest.total == 0 and manifest.skipped["counts"] == {"unknown_av_offset": 2}


@pytest.mark.slow
def test_decoding_workers_give_the_same_pair_shards(grid_root: Path, tmp_path: Path) -> None:
    cfg = dict(source=str(grid_root), videos_per_shard=3)
    serial = prepare_pairs(PairsConfig(**cfg, data_dir=str(tmp_path / "serial")))
    parallel = prepare_pairs(PairsConfig(**cfg, data_dir=str(tmp_path / "parallel"), num_workers=2))
    strip = lambda samples: {s["__key__"]: {k: v for k, v in s.items() if not k.startswith("__")} for s in samples}  # noqa: E731
    assert strip(all_samples(serial)) == strip(all_samples(parallel))
    assert serial.meta["stats"] == parallel.meta["stats"]


def test_settings_come_from_config_nodes_and_unknown_keys_are_named(tmp_path: Path) -> None:
    """PairsConfig and PseudoPairsConfig read dicts and OmegaConf nodes alike (interpolations
    resolved, ``_target_`` dropped); a mistyped key is an error naming it, not a TypeError."""
    from omegaconf import OmegaConf

    from crossmodal.pipeline.pseudo_pairs import PseudoPairsConfig, prepare_pseudo_pairs

    node = OmegaConf.create({"_target_": "crossmodal.pipeline.pairs.PairsConfig", "root": str(tmp_path),
                             "source": "${root}/vids", "segment_seconds": 4})
    with pytest.raises(ValueError, match=r"data\.root; valid keys: .*segment_seconds"):
        PairsConfig.from_cfg(node)
    del node["root"]
    node.source = str(tmp_path / "vids")
    cfg = PairsConfig.from_cfg(node)
    assert cfg.source == str(tmp_path / "vids") and cfg.segment_seconds == 4 and cfg.dataset_name == "vids"
    assert PairsConfig.from_cfg(cfg) is cfg
    with pytest.raises(ValueError, match=r"unknown pseudo-pair key data\.segment_secs"):
        prepare_pseudo_pairs({"segment_secs": 3.0})
    assert isinstance(PseudoPairsConfig(), PseudoPairsConfig)


def test_discovery_lists_files_as_path_rglob_does(tmp_path, monkeypatch):
    """One os.scandir walk, string paths: the same files in the same order as sorted(Path.rglob) gave,
    hidden folders walked, a symlinked folder not, a '.' source relative."""
    from crossmodal.pipeline.pairs import discover
    from crossmodal.pipeline.pairs.discovery import VIDEO_EXTENSIONS

    root = tmp_path / "src"
    for rel in ("a-b/v/1.mp4", "a/v/2.MP4", "a/v/10.mp4", "a/v/2.m4a", "a/.hidden/3.mp4", "b.mkv", "a/v/notes.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()
    (root / "linked").symlink_to(root / "a", target_is_directory=True)
    expected = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    layout, items = discover(PairsConfig(source=str(root)))
    assert layout == "videos" and [i.media for i in items] == [str(p) for p in expected] and len(items) == 5
    monkeypatch.chdir(root)
    assert [i.media for i in discover(PairsConfig(source="."))[1]] == [str(p.relative_to(root)) for p in expected]
