"""FER+ reading, cleaning, face shards and the DataModule, on real FER+ images.

``tests/data/ferplus_sample`` is a small real FER+ subset shipped with the repo (110 images in the
folder layout, with two rows of every cleaning case per split and their fer2013new.csv rows);
the ``ferplus_root`` fixture adds the full FER+ copy in ../shared when it is there.
"""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from crossmodal.data.ferplus import FerPlusDataModule, augment_faces
from crossmodal.emotions import emotion_index
from crossmodal.io.ferplus import (
    FER2013NEW_HEADER,
    SPLIT_FOLDERS,
    CleaningReport,
    clean_votes,
    emotion_target,
    load_ferplus_image,
    read_ferplus,
)
from crossmodal.io.skips import BadSampleError, SkipLog
from crossmodal.pipeline.ferplus import prepare_ferplus
from crossmodal.pipeline.shards import iter_shard, load_manifest

SAMPLE = Path(__file__).parent / "data" / "ferplus_sample"
USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}


def _label_rows(root: Path, split: str) -> list[list[str]]:
    with open(root / SPLIT_FOLDERS[split] / "label.csv", newline="") as f:
        return [row for row in csv.reader(f) if row]


def make_csv_layout(folder_root: Path, out: Path, extra_unnamed: int = 2) -> Path:
    """fer2013.csv (emotion, pixels, Usage) + fer2013new.csv for the images of a folder-layout root.

    FER2013 has no copy of FER+'s votes, so the ``emotion`` column holds the majority emotion; a
    few rows without an image name stand for the images FER+ discarded.
    """
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "fer2013.csv", "w", newline="") as old_file, open(out / "fer2013new.csv", "w", newline="") as new_file:
        old, new = csv.writer(old_file), csv.writer(new_file)
        old.writerow(["emotion", "pixels", "Usage"])
        new.writerow(FER2013NEW_HEADER)
        for split in ("train", "val", "test"):
            for _ in range(extra_unnamed):
                old.writerow([0, " ".join(["128"] * 48 * 48), USAGE[split]])
                new.writerow([USAGE[split], "", 10, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            for row in _label_rows(folder_root, split):
                pixels = np.asarray(Image.open(folder_root / SPLIT_FOLDERS[split] / row[0]).convert("L"))
                old.writerow([int(np.argmax([int(v) for v in row[2:10]])), " ".join(map(str, pixels.ravel())), USAGE[split]])
                new.writerow([USAGE[split], row[0], *row[2:]])
    return out


def shard_contents(folder: Path) -> dict[str, tuple[bytes, dict]]:
    """key -> (png bytes, json) over every shard of a shard set."""
    contents = {}
    for shard in sorted(folder.glob("*.tar")):
        for sample in iter_shard(str(shard)):
            if "png" in sample:
                contents[sample["__key__"]] = (sample["png"], json.loads(sample["json"]))
    return contents


# ----------------------------------------------------------------------------------------- cleaning


def test_cntk_cleaning_on_known_rows():
    # Real rows of FER2013Train/label.csv (neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF)
    kept, _ = clean_votes([6, 0, 1, 1, 0, 0, 0, 0, 2, 0])  # fer0000001: 1-votes dropped, 6 of 8 -> neutral
    assert kept is not None and kept.tolist() == [6, 0, 0, 0, 0, 0, 0, 0, 2, 0]
    assert clean_votes([4, 0, 0, 1, 3, 2, 0, 0, 0, 0]) == (None, "no_majority")  # fer0000000: 4 of 9 is no majority
    assert clean_votes([2, 0, 0, 0, 0, 0, 0, 0, 0, 8])[1] == "unknown_or_nf_max"
    assert clean_votes([3, 3, 0, 3, 0, 0, 0, 0, 1, 0])[1] == "three_way_tie"
    assert clean_votes([0, 0, 0, 0, 0, 0, 0, 0, 10, 0])[1] == "no_emotion_votes"
    # majority-only cleaning keeps the no-majority row; none keeps even unknown-dominated rows
    assert clean_votes([4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "majority")[0] is not None
    assert clean_votes([1, 0, 0, 0, 0, 0, 0, 0, 9, 0], "majority")[1] == "unknown_or_nf_max"
    assert clean_votes([1, 0, 0, 0, 0, 0, 0, 0, 9, 0], "none")[0] is not None
    with pytest.raises(ValueError, match="cleaning"):
        clean_votes([1] * 10, "strictest")


def test_label_modes():
    votes = np.array([6, 3, 0, 1, 0, 0, 0, 0, 0, 0], np.float32)
    assert emotion_target(votes, "majority").tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    assert np.allclose(emotion_target(votes, "probability"), [0.6, 0.3, 0, 0.1, 0, 0, 0, 0])
    # FER+ code's cross-entropy target: the top emotions until 75% of the votes -> neutral + happiness
    assert np.allclose(emotion_target(votes, "crossentropy"), [6 / 9, 3 / 9, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="label mode"):
        emotion_target(votes, "soft")


def test_read_sample_counts_and_images():
    report = CleaningReport("cntk")
    items = read_ferplus(SAMPLE, cleaning="cntk", report=report)
    # The sample holds 60/25/25 rows: two of every cntk drop reason per split (test has no emotion-less
    # row), then the first plain rows of each label.csv, a few of which have no majority either
    assert dict(report.kept) == {"train": 48, "val": 16, "test": 19}
    assert report.dropped["train"] == {"no_majority": 6, "three_way_tie": 2, "unknown_or_nf_max": 2, "no_emotion_votes": 2}
    assert report.dropped["test"] == {"no_majority": 2, "three_way_tie": 2, "unknown_or_nf_max": 2}
    first = next(i for i in items if i.name == "fer0000001.png")
    assert first.split == "train" and first.majority == emotion_index("neutral") and first.votes.shape == (10,)
    assert all(i.name != "fer0000000.png" for i in items)  # no majority: dropped
    image = load_ferplus_image(first)
    assert image.shape == (48, 48) and image.dtype == np.uint8 and image.std() > 10
    # "majority" drops only rows where unknown/NF wins; "none" only the one row without any emotion vote
    assert len(read_ferplus(SAMPLE, cleaning="majority")) == 100
    assert len(read_ferplus(SAMPLE, cleaning="none")) == 109


def test_full_ferplus_cntk_counts(ferplus_full_root):
    report = CleaningReport("cntk")
    items = read_ferplus(ferplus_full_root, cleaning="cntk", report=report)
    # 3137 is the FER+ test size every paper reports under this cleaning
    assert dict(report.kept) == {"train": 25045, "val": 3191, "test": 3137}
    assert len(items) == 25045 + 3191 + 3137


# ----------------------------------------------------------------------------------------- shards


def test_prepare_both_layouts_identical_and_reused(tmp_path):
    csv_root = make_csv_layout(SAMPLE, tmp_path / "csv_layout")
    from_folders = prepare_ferplus(SAMPLE, tmp_path / "a", samples_per_shard=20)
    from_csv = prepare_ferplus(csv_root, tmp_path / "b", samples_per_shard=20)
    assert from_folders.total == from_csv.total == 48 + 16 + 19
    assert from_folders.meta["layout"] == "folders" and from_csv.meta["layout"] == "csv"
    assert from_folders.meta["cleaning_report"]["kept"] == {"train": 48, "val": 16, "test": 19}
    a, b = shard_contents(tmp_path / "a"), shard_contents(tmp_path / "b")
    assert a.keys() == b.keys() and a == b  # same PNG bytes, votes, names, splits
    png, info = a["train_fer0000001"]
    assert info == {"name": "fer0000001.png", "split": "train", "votes": [6, 0, 1, 1, 0, 0, 0, 0, 2, 0]}
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(Image.open(SAMPLE / "FER2013Train" / "fer0000001.png")))
    # a re-run reuses every finished shard
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("*.tar")}
    prepare_ferplus(SAMPLE, tmp_path / "a", samples_per_shard=20)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").glob("*.tar")} == stamps


def test_prepare_real_ferplus_csv_layout(ferplus_root, tmp_path):
    """Real FER+ images (up to 300 training, 40 per other split), in both layouts, give the same shards."""
    folders = tmp_path / "folders"
    for split in ("train", "val", "test"):
        (folders / SPLIT_FOLDERS[split]).mkdir(parents=True)
        rows = _label_rows(ferplus_root, split)[: 300 if split == "train" else 40]
        with open(folders / SPLIT_FOLDERS[split] / "label.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
        for row in rows:
            shutil.copy(ferplus_root / SPLIT_FOLDERS[split] / row[0], folders / SPLIT_FOLDERS[split] / row[0])
    csv_root = make_csv_layout(folders, tmp_path / "csv")
    a = prepare_ferplus(folders, tmp_path / "a", samples_per_shard=100)
    b = prepare_ferplus(csv_root, tmp_path / "b", samples_per_shard=100)
    assert a.total == b.total > 100
    assert shard_contents(tmp_path / "a") == shard_contents(tmp_path / "b")


# ----------------------------------------------------------------------------------------- bad input


def _copy_sample(tmp_path: Path) -> Path:
    root = tmp_path / "ferplus"
    shutil.copytree(SAMPLE, root)
    return root


def test_missing_split_folder_and_empty_split(tmp_path):
    root = _copy_sample(tmp_path)
    shutil.rmtree(root / "FER2013Valid")
    with pytest.raises(FileNotFoundError, match="FER2013Valid"):
        read_ferplus(root)
    assert {i.split for i in read_ferplus(root, splits=("train", "test"))} == {"train", "test"}
    (root / "FER2013Valid").mkdir()
    (root / "FER2013Valid" / "label.csv").write_text("")
    with pytest.raises(ValueError, match="'val'.*no usable image"):
        read_ferplus(root)
    with pytest.raises(FileNotFoundError, match="neither the FER\\+ folders"):
        read_ferplus(tmp_path)


def test_missing_corrupt_and_odd_images(tmp_path):
    root = _copy_sample(tmp_path)
    train = root / "FER2013Train"
    (train / "fer0000001.png").unlink()  # listed in label.csv, file gone
    (train / "fer0000002.png").write_bytes(b"not a png")  # corrupt
    Image.fromarray(np.full((96, 80, 3), 200, np.uint8)).save(train / "fer0000004.png")  # colour, 80x96
    skips = SkipLog()
    items = read_ferplus(root, skips=skips)
    assert skips.counts == {"missing_image": 1} and "fer0000001.png" in skips.examples["missing_image"][0]
    manifest = prepare_ferplus(root, tmp_path / "shards", samples_per_shard=100)
    assert manifest.skipped["counts"] == {"corrupt_image": 1, "converted_to_48x48_grey (kept)": 1}
    assert "fer0000002.png" in manifest.skipped["examples"]["corrupt_image"][0]
    assert manifest.total == len(items) - 1
    odd = next(i for i in items if i.name == "fer0000004.png")
    assert load_ferplus_image(odd).shape == (48, 48)
    with pytest.raises(BadSampleError, match="fer0000004.png.*not 48x48 grey"):
        load_ferplus_image(odd, strict=True)
    with pytest.raises(BadSampleError, match="missing_image: .*fer0000001.png .listed in .*label.csv:2"):
        prepare_ferplus(root, tmp_path / "strict", samples_per_shard=100, strict=True)


def test_fer2013_csv_wrong_header(tmp_path):
    root = make_csv_layout(SAMPLE, tmp_path / "csv")
    text = (root / "fer2013.csv").read_text().replace("emotion,pixels,Usage", "label,pixels,Usage", 1)
    (root / "fer2013.csv").write_text(text)
    with pytest.raises(ValueError, match="fer2013.csv has header .*expected emotion,pixels,Usage"):
        read_ferplus(root)
    (root / "fer2013new.csv").unlink()
    with pytest.raises(FileNotFoundError, match="fer2013new.csv is missing"):
        read_ferplus(root)


# ----------------------------------------------------------------------------------------- tensors


def test_augment_identity_and_flip():
    images = torch.rand(4, 1, 48, 48) * 255
    same = augment_faces(images, flip_p=0.0, affine_p=0.0)
    assert torch.allclose(same, images, atol=1e-3)
    flipped = augment_faces(images, flip_p=1.0, affine_p=0.0)
    assert torch.allclose(flipped, torch.flip(images, dims=[-1]), atol=1e-3)
    moved = augment_faces(images, flip_p=0.0, affine_p=1.0, translate=0.1, rotations=[-10, 10])
    assert moved.shape == images.shape and not torch.allclose(moved, images)


@pytest.fixture(scope="module")
def sample_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ferplus_shards") / "cntk"
    prepare_ferplus(SAMPLE, out, samples_per_shard=20)
    return out


def test_datamodule_batches(sample_shards):
    preprocess = {"channels": 1, "resize": 48, "input_size": 44, "mean": [128.0], "std": [64.0]}
    dm = FerPlusDataModule(shard_dir=str(sample_shards), batch_size=16, eval_batch_size=8, num_workers=0,
                           preprocess=preprocess, augment={"flip_p": 0.5}, shuffle_buffer=32, batches_per_epoch=3)
    dm.prepare_data()  # shards exist: nothing to do, no source needed
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 3
    batch = batches[0]
    assert batch["image"].shape == (16, 48, 48) and batch["image"].dtype == torch.uint8
    assert torch.allclose(batch["target"].sum(-1), torch.ones(16))
    assert (batch["target"].argmax(-1) == batch["label"]).all()
    x = dm.transform(batch["image"], train=True)
    assert x.shape == (16, 1, 44, 44) and x.dtype == torch.float32 and abs(float(x.mean())) < 1.5
    val_keys = [k for b in dm.val_dataloader() for k in b["key"]]
    assert len(val_keys) == len(set(val_keys)) == 16  # exactly once
    test_total = sum(len(b["label"]) for b in dm.test_dataloader())
    assert test_total == 19


def test_datamodule_prepares_on_first_use(tmp_path):
    dm = FerPlusDataModule(source=str(SAMPLE), shard_dir=str(tmp_path / "ferplus" / "cntk"), num_workers=0)
    dm.prepare_data()
    assert load_manifest(tmp_path / "ferplus" / "cntk").total == 83
    with pytest.raises(FileNotFoundError, match="data.source"):
        FerPlusDataModule(shard_dir=str(tmp_path / "elsewhere"), num_workers=0).prepare_data()
    with pytest.raises(ValueError, match="cleaned with 'cntk'"):
        FerPlusDataModule(shard_dir=str(tmp_path / "ferplus" / "cntk"), cleaning="none").setup()
