"""The dashboard's sample gallery: face frames found by key in real pair shards, and its figure."""
from __future__ import annotations

import numpy as np
from distill_fixtures import write_distill_shards

from crossmodal.callbacks.gallery import find_pair_frames, gallery_figure
from crossmodal.utils.plots import close


def test_gallery_finds_frames_and_draws(emodb_root, tmp_path):
    pairs = write_distill_shards(tmp_path / "pairs", emodb_root, per_speaker=2, with_frames=True)
    from crossmodal.pipeline.shards import load_manifest, tar_member_names

    names = [n for path in load_manifest(pairs).paths() for n in tar_member_names(path)]
    keys = {names[0].split(".")[0], names[-1].split(".")[0]}
    frames = find_pair_frames(pairs, keys | {"no_such_clip"}, max_frames=3)
    assert set(frames) == keys
    assert all(f.dtype == np.uint8 and 1 <= len(f) <= 3 for f in frames.values())
    rows = [{"key": k, "frames": list(v), "teacher": np.full(8, 1 / 8), "student": np.eye(8)[1], "title": k} for k, v in frames.items()]
    fig = gallery_figure(rows)
    assert len(fig.axes) == sum(len(r["frames"]) for r in rows) + len(rows)
    close(fig)
