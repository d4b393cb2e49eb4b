"""verify catches changed and missing shards; the CLI reports them and exits non-zero."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from sslpipe.cli import main
from sslpipe.data import sample_path, verify_shards


@pytest.fixture
def shards(tmp_path):
    out = tmp_path / "s"
    shutil.copytree(sample_path("test"), out)
    return out


def test_intact_sample_verifies(shards):
    assert verify_shards(str(shards), decode=True) == []
    result = CliRunner().invoke(main, ["shard", "verify", str(shards)])
    assert result.exit_code == 0 and "OK" in result.output


def test_flipped_byte_is_caught(shards):
    tar = shards / "fashion_mnist_test-000000.tar"
    data = bytearray(tar.read_bytes())
    data[600] ^= 0xFF  # inside the first image's data
    tar.write_bytes(bytes(data))
    problems = verify_shards(str(shards), decode=True)
    assert any("sha256" in p for p in problems)
    assert any("does not decode" in p for p in problems)
    result = CliRunner().invoke(main, ["shard", "verify", str(shards), "--decode"])
    assert result.exit_code != 0 and "sha256" in result.output


def test_missing_shard_and_index_are_caught(shards):
    (shards / "fashion_mnist_test-000000.tar").unlink()
    problems = verify_shards(str(shards))
    assert any("fashion_mnist_test-000000.tar: missing" in p for p in problems)
    result = CliRunner().invoke(main, ["shard", "verify", str(shards)])
    assert result.exit_code != 0 and "missing" in result.output


def test_missing_manifest_names_the_path(tmp_path):
    with pytest.raises(ValueError, match="manifest.json.*is missing"):
        verify_shards(str(tmp_path))
    result = CliRunner().invoke(main, ["shard", "info", str(tmp_path)])
    assert result.exit_code != 0 and "manifest.json" in result.output
