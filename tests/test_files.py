"""jaxnet.training.files: atomic writes leave the old file or the new, with ordinary permissions."""

import errno
import json
import os
import stat

import pytest

from jaxnet.training import files


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    files.write_json_atomic(path, {"x": 1})
    files.write_json_atomic(path, {"x": float("nan")})
    assert json.loads(path.read_text()) == {"x": "nan"}  # strict JSON: no bare NaN
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_written_files_get_the_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = files.write_bytes_atomic(tmp_path / "b.bin", b"abc")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "c.json"
    files.write_json_atomic(path, {"ok": True})
    with pytest.raises(TypeError):
        files.write_json_atomic(path, {"bad": object()})
    assert "ok" in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "c.json"
    files.write_json_atomic(path, {"ok": True})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a full disk fails fsync

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(OSError, match=r"No space left on device: could not write .*c\.json \(it"):
        files.write_json_atomic(path, {"new": 1})
    assert "ok" in path.read_text() and [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_nonfinite_values_read_back_as_floats():
    text = json.dumps(files.finite({"a": [float("nan"), -float("inf")], "b": "inf", "c": 1}))
    back = files.parse_json(text)
    assert back["a"][0] != back["a"][0] and back["a"][1] == back["b"] * -1 == -float("inf")
    assert back["c"] == 1


def test_remove_temporaries_removes_only_those_of_the_names_given(tmp_path):
    ours = [".a.json.ab12cd_9.tmp", ".b.npz.zzzzzzzz.tmp"]
    theirs = [".a.json.tmp", ".c.json.ab12cd_9.tmp", "a.json.ab12cd_9.tmp", ".a.json.AB12CD_9.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_text("x")
    removed = files.remove_temporaries(tmp_path, ["a.json", "b.npz"])
    assert sorted(p.name for p in removed) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)
