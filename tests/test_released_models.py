"""Files made by a released model keep decoding after the default model changes.

Every model that was ever the bundled default stays installed under its own name (fp16, a few MB), with
the model id its files carry. ``tests/fixtures/released/`` holds small ``.wtk`` files made by each, and
the tokens they hold: the registry must find the model by the id in the file and give the tokens back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from safetensors import safe_open

from wetok import read_info, zoo
from wetok.modeldir import GENERATIVE_DECODER_NAME
from wetok_cli.main import cli

FIXTURES = Path(__file__).parent / "fixtures" / "released"

# name in the registry -> model id (hex) of the files it made; never remove or change an entry.
RELEASED = {
    "default-v1": "e05400c6dcf8",  # 2026-11: 5 x 8 bits, full-resolution layout, generative decoder
    "default": "2deb5936b66a",  # 2026-12: 6 x 8 bits, patch-4 stem
}


@pytest.fixture(autouse=True)
def _only_bundled_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WETOK_MODELS", "")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_model_is_bundled_small_fp16_with_its_id(name: str) -> None:
    model = next(m for m in zoo.list_models() if m.name == name)
    assert model.bundled and zoo.load_codec(name).model_id_hex == RELEASED[name]
    weights = [
        p for p in (model.path / n for n in ("model.safetensors", GENERATIVE_DECODER_NAME)) if p.exists()
    ]
    # A model with a generative decoder beside its own carries two decoders: 32 MiB, else 20.
    limit = (32 if len(weights) == 2 else 20) * 1024 * 1024
    assert sum(p.stat().st_size for p in model.path.iterdir()) < limit
    for path in weights:
        with safe_open(str(path), "pt") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.wtk")), ids=lambda p: p.name)
def test_old_files_decode_with_the_model_that_made_them(path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    model_id = read_info(data).model_id
    assert model_id.hex() in RELEASED.values()
    codec = zoo.find_codec_by_model_id(model_id)
    tokens, size = codec.unpack_tokens(data)
    expected = np.load(FIXTURES / path.name.replace(f"-{read_info(data).mode}.wtk", "-tokens.npy"))
    assert np.array_equal(tokens.numpy(), expected)
    out = tmp_path / "out.png"
    r = CliRunner().invoke(cli, ["decompress", str(path), "-o", str(out), "--seed", "0"])
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (size[1], size[0])


def test_models_lists_each_release_with_its_default_mode() -> None:
    r = CliRunner().invoke(cli, ["models", "--json"])
    assert r.exit_code == 0, r.output
    records = {rec["name"]: rec for rec in map(json.loads, r.output.splitlines())}
    for name, model_id in RELEASED.items():
        assert records[name]["model_id"] == model_id and records[name]["default_mode"] == "context"
