import pytest

from pipeline.training import registry


def test_claim_should_take_the_next_free_version_and_never_reuse_one(tmp_path):
    assert registry.claim(tmp_path, "gbt")[0] == 1
    (tmp_path / "gbt" / "v3").mkdir()   # a gap, e.g. versions removed by hand
    (tmp_path / "gbt" / "notes").mkdir()
    version, path = registry.claim(tmp_path, "gbt")
    assert version == 4 and path == tmp_path / "gbt" / "v4" and path.is_dir()
    assert registry.versions(tmp_path, "gbt") == [1, 3, 4]


def test_a_version_file_should_never_be_overwritten_nor_left_half_written(tmp_path):
    _, path = registry.claim(tmp_path, "gbt")
    registry.write_member(path, b"graph", {"name": "gbt"})
    with pytest.raises(FileExistsError):
        registry.write_member(path, b"other graph", {"name": "gbt"})
    assert (path / "model.onnx").read_bytes() == b"graph"
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "model.onnx"]
