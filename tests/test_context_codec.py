"""Context coding through the codec, the registry and the CLI: default mode, round trips, tiling, model files
refused at load, model ids unchanged by adding a context model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import no_hang, tiny_model
from wetok.codec import Codec
from wetok.context import CONTEXT_NAME, ContextModel
from wetok.context_fit import fit_context_model
from wetok.errors import ContextModelError, ModelMismatchError
from wetok.info import read_info
from wetok.modeldir import hash_model_id
from wetok.prior import PRIOR_NAME, fit_prior
from wetok_cli.main import cli


def ramp_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = rng.uniform(1, 4, 3)
    return np.stack([(x * a[0]) % 256, (y * a[1]) % 256, ((x + y) * a[2]) % 256], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model (f=2, 2x4 bits) with a fitted prior and a context model."""
    path = tmp_path_factory.mktemp("models") / "tiny-ctx"
    model = tiny_model(0)
    model.save_pretrained(path)
    tokens = [
        model.encode(torch.from_numpy(ramp_image(48, 64, s)).permute(2, 0, 1)[None].float() / 127.5 - 1)
        for s in range(3)
    ]
    fit_prior(tokens, 2, 4).save(path)
    fit_context_model(tokens, 2, 4, epochs=4, batch_size=128).save(path)
    return path


@pytest.fixture(scope="module")
def codec(model_dir: Path) -> Codec:
    return Codec.from_pretrained(model_dir)


def test_context_is_the_default_mode_and_smaller(codec: Codec) -> None:
    assert codec.default_mode == "context"
    image = ramp_image(40, 56, seed=5)
    data = codec.compress(image)
    static = codec.compress(image, mode="static")
    assert read_info(data).mode == "context" and read_info(static).mode == "static"
    assert len(data) < len(static)
    assert torch.equal(codec.unpack_tokens(data)[0], codec.unpack_tokens(static)[0])
    info = read_info(data, codec)
    assert info.ideal_bytes is not None and abs(info.bytes - info.ideal_bytes) < 8


@pytest.mark.parametrize("size", [(37, 29), (1, 1), (16, 16), (3, 50), (50, 3)])
@pytest.mark.parametrize("mode", ["context", "static", "raw"])
def test_real_tokens_round_trip(codec: Codec, size: tuple[int, int], mode: str) -> None:
    tokens, got = codec.encode_tokens(ramp_image(*size, seed=sum(size)))
    back, back_size = codec.unpack_tokens(codec.pack_tokens(tokens, got, mode))
    assert back_size == size and torch.equal(back, tokens)


def test_random_tokens_round_trip(codec: Codec) -> None:
    tokens = torch.randint(0, 16, (1, 13, 17, 2), generator=torch.Generator().manual_seed(0))
    for mode in ("context", "static", "raw"):
        back, _ = codec.unpack_tokens(codec.pack_tokens(tokens, (26, 34), mode))
        assert torch.equal(back, tokens)


def test_tiling_changes_nothing_in_the_payload(model_dir: Path, codec: Codec) -> None:
    """The context runs over the whole token grid: the payload of a grid is the same whatever the tiles."""
    tiled = Codec.from_pretrained(model_dir, tile_tokens=5)
    image = ramp_image(44, 60, seed=2)
    tokens, size = tiled.encode_tokens(image)  # encoded in 5x5-token tiles
    data = tiled.pack_tokens(tokens, size)
    assert read_info(data).mode == "context"
    assert data == codec.pack_tokens(tokens, size)
    assert torch.equal(codec.unpack_tokens(data)[0], tokens)
    assert tiled.decompress(data).image.size == (60, 44)


def test_adding_a_context_model_keeps_the_model_id(model_dir: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(model_dir, plain)
    (plain / CONTEXT_NAME).unlink()
    assert hash_model_id(plain) == hash_model_id(model_dir)
    without = Codec.from_pretrained(plain)
    assert without.default_mode == "static" and without.model_id == Codec.from_pretrained(model_dir).model_id
    with pytest.raises(ModelMismatchError, match="no context model"):
        without.decompress(Codec.from_pretrained(model_dir).compress(ramp_image(30, 30)))


def _broken(model_dir: Path, tmp_path: Path, edit) -> Path:
    path = tmp_path / "broken"
    shutil.copytree(model_dir, path)
    edit(path / CONTEXT_NAME)
    return path


def _other_shape(path: Path) -> None:
    d = json.loads(path.read_text())
    other = fit_context_model([np.zeros((3, 3, 1), np.int64)], 1, 4, epochs=1).to_dict()
    d.update({k: other[k] for k in ("groups", "group_bits", "bias", "present", "neighbour", "own")})
    d["offsets"] = other["offsets"]
    path.write_text(json.dumps(d))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.write_text(p.read_text()[:1000]), "cannot read context model"),
        (
            lambda p: p.write_text(
                json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "table"})
            ),
            "missing fields: table",
        ),
        (lambda p: p.write_bytes(b""), "cannot read context model"),
        (_other_shape, "g=1, d'=4; the model has g=2, d'=4"),
        (lambda p: (p.unlink(), os.mkfifo(p)), "is a FIFO, not a regular file"),  # a hang before
        (lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "nested too deeply"),  # a RecursionError
    ],
    ids=["truncated", "no table", "empty", "other shape", "fifo", "deep"],
)
def test_bad_context_model_refused_at_load(model_dir: Path, tmp_path: Path, edit, message: str) -> None:
    path = _broken(model_dir, tmp_path, edit)
    with no_hang(), pytest.raises(ContextModelError, match=message) as err:
        Codec.from_pretrained(path)
    assert str(path / CONTEXT_NAME) in str(err.value) and "\n" not in str(err.value)
    from PIL import Image

    Image.fromarray(ramp_image(8, 8)).save(tmp_path / "x.png")
    with no_hang():
        result = CliRunner().invoke(cli, ["compress", str(tmp_path / "x.png"), "-m", str(path)])
    assert result.exit_code == 2 and CONTEXT_NAME in result.stderr and len(result.stderr.splitlines()) == 1


def test_cli_modes_info_and_fit_prior_keep_prior(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    work = tmp_path / "m"
    shutil.copytree(model_dir, work)
    (work / CONTEXT_NAME).unlink()
    prior_bytes, model_id = (work / PRIOR_NAME).read_bytes(), hash_model_id(work)
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        Image.fromarray(ramp_image(40, 48, seed=10 + i)).save(tmp_path / f"img{i}.png")
    runner = CliRunner()
    args = ["fit-prior", str(work), "img0.png", "img1.png", "--keep-prior", "--min-tokens", "0"]
    fit = runner.invoke(cli, [*args, "--json"])  # adding a context model in place: no --force needed
    assert fit.exit_code == 0, fit.output
    report = json.loads(fit.stdout)
    assert report["tokens"] == 2 * 20 * 24 and {"static", "context", "empirical_entropy"} <= set(report)
    assert (work / PRIOR_NAME).read_bytes() == prior_bytes and hash_model_id(work) == model_id
    assert ContextModel.load(work).groups == 2
    again = runner.invoke(cli, args)  # replacing it would orphan its context-coded files
    assert again.exit_code == 2 and "-o NEW_DIR" in again.stderr
    for mode, expected in ((None, "context"), ("static", "static"), ("raw", "raw")):
        args = ["compress", "img0.png", "-m", str(work), "-o", f"{expected}.wtk", "--json"]
        done = runner.invoke(cli, args + (["--mode", mode] if mode else []))
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["mode"] == expected
    monkeypatch.setenv("WETOK_MODELS", str(tmp_path))
    info = runner.invoke(cli, ["info", "context.wtk", "--json"])
    record = json.loads(info.stdout)
    assert record["mode"] == "context" and record["ideal_bytes"] is not None
    assert record["bits_per_token"] == pytest.approx(8 * record["payload_bytes"] / record["tokens"])
