"""Model ids stored in model directories: written by every writer, read (not hashed) when searching."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from click.testing import CliRunner
from conftest import no_hang, tiny_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import wetok.modeldir as modeldir
from wetok import zoo
from wetok.codec import Codec
from wetok.errors import ModelNotFoundError
from wetok.modeldir import MODEL_ID_NAME, WEIGHTS_NAME, read_model_id, stored_model_id
from wetok.prior import fit_prior
from wetok_cli.main import cli


def _saved_codec(directory: Path, seed: int) -> Codec:
    model = tiny_model(seed)
    prior = fit_prior([model.encode(torch.rand(2, 3, 32, 32) * 2 - 1)], 2, 4)
    codec = Codec(model, prior)
    codec.save_pretrained(directory)
    return codec


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "models"
    monkeypatch.setenv("WETOK_MODELS", str(root))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return root


def test_save_pretrained_stores_the_model_id(tmp_path: Path) -> None:
    codec = _saved_codec(tmp_path / "m", seed=0)
    assert (tmp_path / "m" / MODEL_ID_NAME).is_file()
    assert stored_model_id(tmp_path / "m") == codec.model_id == Codec.from_pretrained(tmp_path / "m").model_id
    assert modeldir.hash_model_id(tmp_path / "m") == codec.model_id
    tiny_model(seed=3).save_pretrained(tmp_path / "m")  # weights alone: the stored id no longer holds
    assert not (tmp_path / "m" / MODEL_ID_NAME).exists()
    assert read_model_id(tmp_path / "m") == Codec.from_pretrained(tmp_path / "m").model_id


def test_finding_a_model_reads_no_other_weights(registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`wetok info` / `decompress` open the weights of the one model they load, and no other's."""
    for name, seed in (("a-other", 1), ("b-big", 2), ("c-wanted", 0)):
        _saved_codec(registry / name, seed)
    wanted = Codec.from_pretrained(registry / "c-wanted")
    data = wanted.compress(np.zeros((8, 8, 3), np.uint8))
    read: list[Path] = []

    def counting_load_file(path: str, *args: object, **kwargs: object) -> dict:
        read.append(Path(path).parent.name)
        return load_file(path, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "load_file", counting_load_file)  # modeldir.read_model_files
    monkeypatch.setattr(modeldir, "hash_model_id", lambda path: pytest.fail(f"hashed {path}"))
    (registry.parent / "x.wtk").write_bytes(data)
    monkeypatch.chdir(registry.parent)
    result = CliRunner().invoke(cli, ["info", "x.wtk", "--json"])
    assert result.exit_code == 0, result.output
    assert (
        f'"model_id": "{wanted.model_id_hex}"' in result.stdout and '"ideal_bytes": null' not in result.stdout
    )
    assert read == ["c-wanted"]
    read.clear()
    result = CliRunner().invoke(cli, ["decompress", "x.wtk", "-o", "x.png"])
    assert result.exit_code == 0, result.output
    assert read == ["c-wanted"]


def test_model_without_stored_id_is_hashed_once(registry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Directories written by an older wetok (or the bundled one) have no model_id.json: their id is
    computed once and remembered in the user cache, not written into the model directory."""
    codec = _saved_codec(registry / "old", seed=0)
    (registry / "old" / MODEL_ID_NAME).unlink()
    assert zoo.find_codec_by_model_id(codec.model_id).path == registry / "old"
    assert modeldir.cache_file().is_file() and not (registry / "old" / MODEL_ID_NAME).exists()
    modeldir._cached_model_id.cache_clear()  # as a new process would start
    monkeypatch.setattr(modeldir, "hash_model_id", lambda path: pytest.fail(f"hashed {path} again"))
    assert read_model_id(registry / "old") == codec.model_id


def test_files_changed_behind_the_stored_id(registry: Path, tmp_path: Path) -> None:
    codec = _saved_codec(registry / "m", seed=0)
    # Other weights of the same shapes written by another tool: same file sizes, model_id.json untouched.
    weights = registry / "m" / WEIGHTS_NAME
    metadata = safe_open(str(weights), "pt").metadata()
    save_file({k: v + 1 for k, v in load_file(str(weights)).items()}, str(weights), metadata=metadata)
    assert stored_model_id(registry / "m") == codec.model_id  # the cheap check cannot see it ...
    with pytest.raises(ModelNotFoundError, match="does not match its files"):
        zoo.find_codec_by_model_id(codec.model_id)  # ... loading can
    (registry / "m" / "prior.json").write_text((registry / "m" / "prior.json").read_text() + "\n")
    assert stored_model_id(registry / "m") is None  # a size changed: the stored id is not trusted


def test_bundled_model_keeps_its_id() -> None:
    """Old .wtk files name the bundled model by this id; no refactor may change it."""
    bundled = zoo.BUNDLED_DIR / "default-v1"  # the first released default (tests/test_released_models.py)
    assert read_model_id(bundled).hex() == "e05400c6dcf8"
    assert Codec.from_pretrained(bundled).model_id_hex == "e05400c6dcf8"


@pytest.mark.parametrize("plant", ["fifo", "deep"])
def test_a_hostile_model_id_json_elsewhere_breaks_nothing(
    registry: Path, monkeypatch: pytest.MonkeyPatch, plant: str
) -> None:
    """A FIFO (opening it waited forever for a writer) or JSON nested too deeply (a RecursionError) as
    ``model_id.json`` of another folder on the search path: the folder's id is computed from its files
    instead, and every other model's files still decode."""
    _saved_codec(registry / "a-planted", seed=1)
    wanted = _saved_codec(registry / "b-wanted", seed=0)
    planted = registry / "a-planted" / MODEL_ID_NAME
    planted.unlink()
    if plant == "fifo":
        os.mkfifo(planted)
    else:
        planted.write_text("[" * 100_000 + "]" * 100_000)
    (registry.parent / "x.wtk").write_bytes(wanted.compress(np.zeros((8, 8, 3), np.uint8)))
    monkeypatch.chdir(registry.parent)
    with no_hang():
        for args in (["info", "x.wtk"], ["decompress", "x.wtk", "-o", "x.png"], ["models"]):
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, result.output
        assert zoo.find_codec_by_model_id(wanted.model_id).path == registry / "b-wanted"
