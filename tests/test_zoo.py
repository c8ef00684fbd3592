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
from wetok.modeldir import (
    GENERATIVE_DECODER_NAME,
    MODEL_ID_NAME,
    WEIGHTS_NAME,
    read_model_id,
    stored_model_id,
)
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


# -- lookup by id and the generative add-on (issue 28 item 1) ------------------------------------------------
@pytest.fixture
def bundled_with_addon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A bundled ``default`` with the generative add-on (realism 1 files need it), an empty user folder
    searched first, and two files made with the bundled model: ``v1.wtk`` (realism none) and ``r1.wtk``."""
    model = tiny_model(0)
    model.attach_generative_decoder(model.to_generative(level_noise=True).decoder)
    bundled = tmp_path / "bundled" / "default"
    Codec(model).save_pretrained(bundled)
    model.save_generative_decoder(bundled)
    monkeypatch.setattr(zoo, "BUNDLED_DIR", bundled.parent)
    monkeypatch.setenv("WETOK_MODELS", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(zoo, "_warned", set())
    monkeypatch.chdir(tmp_path)
    codec, image = Codec(model), np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    (tmp_path / "v1.wtk").write_bytes(codec.compress(image, realism=0))
    (tmp_path / "r1.wtk").write_bytes(codec.compress(image, realism=1, seed=2))
    return bundled, tmp_path / "user" / "default"


def _decode_both() -> list[str]:
    outputs = []
    for name in ("v1", "r1"):
        result = CliRunner().invoke(cli, ["decompress", f"{name}.wtk", "-o", f"{name}.png", "-f"])
        assert result.exit_code == 0, result.output
        outputs.append(result.stderr)
    result = CliRunner().invoke(cli, ["info", "v1.wtk", "r1.wtk"])
    assert result.exit_code == 0, result.output
    return outputs


def test_a_half_copied_addon_earlier_on_the_path_is_skipped(bundled_with_addon: tuple[Path, Path]) -> None:
    import shutil

    bundled, user = bundled_with_addon
    shutil.copytree(bundled, user)
    addon = user / GENERATIVE_DECODER_NAME
    addon.write_bytes(addon.read_bytes()[: addon.stat().st_size // 2])
    stderr = _decode_both()
    assert "skipping broken model folder" in stderr[0] and GENERATIVE_DECODER_NAME in stderr[0]
    rows = [line for line in CliRunner().invoke(cli, ["models"]).stdout.splitlines() if str(user) in line]
    assert len(rows) == 1 and "broken" in rows[0]


def test_a_copy_without_the_addon_does_not_hide_the_one_with_it(bundled_with_addon: tuple) -> None:
    import shutil

    bundled, user = bundled_with_addon
    shutil.copytree(bundled, user, ignore=shutil.ignore_patterns(GENERATIVE_DECODER_NAME))
    _decode_both()  # the realism 1 file is painted by the bundled model, the copy serves the rest
    assert zoo.find_codec_by_model_id(Codec.from_pretrained(bundled).model_id).path == user
    assert zoo.find_codec_by_model_id(Codec.from_pretrained(bundled).model_id, realism=1).path == bundled


def test_an_addon_beside_a_generative_model_is_a_broken_folder(
    bundled_with_addon: tuple[Path, Path], tmp_path: Path
) -> None:
    bundled, user = bundled_with_addon
    Codec(tiny_model(0, generative=True)).save_pretrained(user)
    (user / GENERATIVE_DECODER_NAME).write_bytes((bundled / GENERATIVE_DECODER_NAME).read_bytes())
    _decode_both()
    assert "broken" in next(line for line in CliRunner().invoke(cli, ["models"]).stdout.splitlines()[1:])
    result = CliRunner().invoke(cli, ["compress", "v1.png", "-m", str(user), "-o", "x.wtk"])
    assert result.exit_code == 2 and "generative already" in result.stderr and "internal" not in result.output


def test_a_folder_that_fails_to_load_gives_way_to_the_next(bundled_with_addon: tuple[Path, Path]) -> None:
    """Weights past what the listing checks (NaN values, the header intact) in an earlier copy."""
    import shutil

    bundled, user = bundled_with_addon
    shutil.copytree(bundled, user)
    addon = user / GENERATIVE_DECODER_NAME
    tensors, metadata = load_file(str(addon)), safe_open(str(addon), "pt").metadata()
    tensors = {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}
    save_file(tensors, str(addon), metadata=metadata)
    stderr = _decode_both()
    assert f"skipping model folder {user}" in stderr[0] and "NaN" in stderr[0]
