"""crossmodal.utils.atomic: the one way the package writes files (tmp beside the target, fsync, rename)."""
from __future__ import annotations

import json
import os

import pytest

from crossmodal.utils.atomic import atomic_path, publish, tmp_path_for, write_bytes, write_json, write_text


def test_writes_replace_whole_files_and_leave_no_temporaries(tmp_path):
    target = tmp_path / "deep" / "metrics.json"
    write_json(target, {"b": 1, "a": float("nan")})
    assert json.loads(target.read_text())["b"] == 1 and target.read_text().endswith("\n")
    write_text(target, "second")
    assert target.read_text() == "second"
    write_bytes(tmp_path / "x.bin", b"\x00\x01")
    assert (tmp_path / "x.bin").read_bytes() == b"\x00\x01"
    assert not list(tmp_path.rglob(".*.tmp-*"))


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old" and not list(tmp_path.glob(".*.tmp-*"))
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(target):
            pass
    assert target.read_text() == "old"


def test_publish_sets_the_mode_and_names_the_temporary_by_process(tmp_path):
    target = tmp_path / "last.ckpt"
    tmp = tmp_path_for(target)
    assert tmp.parent == tmp_path and tmp.name == f".last.ckpt.tmp-{os.getpid()}"
    tmp.write_bytes(b"ckpt")
    publish(tmp, target, mode=0o640)
    assert target.read_bytes() == b"ckpt" and (target.stat().st_mode & 0o777) == 0o640 and not tmp.exists()
