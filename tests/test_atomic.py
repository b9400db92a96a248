"""Atomic writes: the old file stays until the new one is complete, and modes follow the umask."""

from __future__ import annotations

import os
import stat

import pytest

from ovdoc.atomic import atomic_dir, atomic_path, write_text_atomic


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "events.jsonl"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl"]


def test_failed_directory_keeps_the_old_directory(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "manifest.json").write_text("{}")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "manifest.json").write_text('{"half": true}')
        raise RuntimeError("crash mid-write")
    assert (target / "manifest.json").read_text(encoding="utf-8") == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_successful_directory_replaces_the_old_one(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "stale.txt").write_text("x")
    with atomic_dir(target) as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_modes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "a.txt", "hi")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
