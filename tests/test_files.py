"""jaxnet.training.files: atomic writes leave the old file or the new, with ordinary permissions."""

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
