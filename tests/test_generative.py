"""The generative decoder: noise at every level, realism (which decoder, or a blend), the decoder setting in
the file, seed search, and the stage-2 recipe that attaches a decoder to an unchanged model."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.conftest import tiny_model, with_generative_decoder
from tests.test_train import _cfg, _make_images
from wetok import Codec, Tokenizer
from wetok import format as fmt
from wetok.errors import RealismError
from wetok.format import Header
from wetok.modeldir import GENERATIVE_DECODER_NAME, ModelFilesError, read_model_id
from wetok.setting import DecoderSetting
from wetok.tokenizer import load_generative_decoder
from wetok_cli.main import cli
from wetok_train.loop import train
from wetok_train.losses import diff_augment, diversity_loss


def _tokens(model: Tokenizer, h: int = 5, w: int = 7) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, 2**model.config.group_bits, (1, h, w, model.config.groups))


def test_level_noise_starts_as_the_stage1_decoder() -> None:
    model = tiny_model()
    widened = model.to_generative(level_noise=True)
    tokens = _tokens(model)
    assert torch.equal(widened.decode(tokens, seed=3), model.decode(tokens))  # zero-initialised noise paths
    shapes = widened.decoder.noise_shapes((1, model.config.latent_dim, 5, 7))
    # The input's noise, then one map per block of each level in the order they run (tiny: 2 levels).
    assert shapes == [(1, model.config.latent_dim, 5, 7), (1, 1, 5, 7), (1, 1, 10, 14)]


def test_generative_decoder_travels_beside_an_unchanged_model(tmp_path) -> None:
    model = with_generative_decoder()
    Codec(model).save_pretrained(tmp_path / "m")
    model_id = read_model_id(tmp_path / "m")
    model.save_generative_decoder(tmp_path / "m")
    loaded = Codec.from_pretrained(tmp_path / "m")
    assert loaded.model.has_generative_decoder and loaded.model.default_realism == 0.8
    assert loaded.model_id == model_id  # the add-on changes how files look, not which tokens they hold
    tokens = _tokens(model)
    assert torch.equal(
        loaded.model.decode(tokens, seed=2, realism=1), model.decode(tokens, seed=2, realism=1)
    )
    assert torch.equal(loaded.model.decode(tokens), tiny_model().decode(tokens))


def test_full_resolution_head_starts_as_the_picture_and_travels(tmp_path) -> None:
    """A zero-initialised head changes no pixel until trained; its width travels in the decoder file's
    metadata (never guessed from shapes); its noise map is drawn last, so the maps before it are unchanged;
    the realism blend sees no head in the faithful decoder (zero weights: the picture passes through)."""
    model = tiny_model()
    widened = model.to_generative(level_noise=True, head_channels=8)
    head = widened.decoder.head
    assert head.conv_mid.weight.abs().sum() > 0 and head.conv_out.weight.abs().sum() == 0  # can learn
    tokens = _tokens(model)
    assert torch.equal(widened.decode(tokens, seed=3), model.decode(tokens))
    shape = (1, model.config.latent_dim, 5, 7)
    f = model.config.downsample
    assert widened.decoder.noise_shapes(shape)[-1] == (1, 1, 5 * f, 7 * f)  # one map at full resolution
    with torch.no_grad():
        head.conv_out.weight.normal_(0, 0.1)
        head.noise.weight.fill_(0.5)
    model.attach_generative_decoder(widened.decoder)
    without = tiny_model().to_generative(level_noise=True).decoder.noise_shapes(shape)
    assert model.draw_noise(shape, seed=4, realism=1)[: len(without)][-1].shape == without[-1]
    a, b = model.decode(tokens, seed=0, realism=1), model.decode(tokens, seed=1, realism=1)
    assert (a - b).abs().mean() > 0.001  # the head's per-pixel noise reaches the picture
    Codec(model).save_pretrained(tmp_path / "m")
    model.save_generative_decoder(tmp_path / "m")
    loaded = Codec.from_pretrained(tmp_path / "m").model
    assert torch.equal(loaded.decode(tokens, seed=2, realism=1), model.decode(tokens, seed=2, realism=1))
    assert torch.equal(loaded.decode(tokens, seed=2, realism=0.5), model.decode(tokens, seed=2, realism=0.5))


def test_a_generative_decoder_that_does_not_fit_is_refused(tmp_path) -> None:
    from safetensors.torch import save_file

    model = tiny_model()
    bad = tmp_path / GENERATIVE_DECODER_NAME
    save_file({"conv_in.weight": torch.zeros(3, 3)}, str(bad))
    with pytest.raises(ModelFilesError, match=GENERATIVE_DECODER_NAME):
        load_generative_decoder(bad, model.config)
    state = {k: v.clone() for k, v in model.to_generative(level_noise=True).decoder.state_dict().items()}
    state["conv_out.bias"][0] = float("nan")
    save_file(state, str(bad))
    with pytest.raises(ModelFilesError, match="NaN"):
        load_generative_decoder(bad, model.config)


def test_files_carry_the_decoder_setting() -> None:
    codec = Codec(with_generative_decoder())
    image = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    data = codec.compress(image)
    header, _ = fmt.unpack(data)
    assert (header.version, header.realism, header.seed) == (2, 0.8, 0)  # the model's default
    data = codec.compress(image, realism=1, seed=9)
    header, _ = fmt.unpack(data)
    assert (header.realism, header.seed) == (1.0, 9)
    tokens, _ = codec.unpack_tokens(data)
    expected = codec.decode_tokens(tokens, (20, 28), DecoderSetting(1, 9))
    image_out, used = codec.decompress(data)
    assert used == DecoderSetting(1, 9) and np.array_equal(np.asarray(image_out), np.asarray(expected))
    overridden = codec.decode_tokens(tokens, (20, 28), DecoderSetting(0.25, 3))
    decoded = codec.decompress(data, seed=3, realism=0.25)
    assert decoded.setting == DecoderSetting(0.25, 3)
    assert np.array_equal(np.asarray(decoded.image), np.asarray(overridden))
    with pytest.raises(RealismError):
        Codec(tiny_model()).compress(image, realism=0.5)


def test_files_without_a_setting_decode_with_the_models_own_decoder() -> None:
    plain, with_gd = Codec(tiny_model()), Codec(with_generative_decoder())
    image = np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    data = plain.compress(image)
    assert data[2] == 1 and fmt.unpack(data)[0].realism is None  # version 1, byte for byte as before
    decoded = with_gd.decompress(data)
    assert decoded.setting == DecoderSetting(0, 0)  # the model's own decoder, seed 0
    assert np.array_equal(np.asarray(decoded.image), np.asarray(plain.decompress(data).image))


def test_header_decoder_setting_round_trip_and_limits() -> None:
    header = Header(b"\1" * 6, "raw", 16, 16, 4, 2, 4, realism=0.37, seed=fmt.MAX_SEED)
    data = fmt.pack(header, b"\0" * header.raw_payload_bytes)
    assert fmt.unpack(data)[0] == header
    assert len(data) == len(fmt.pack(Header(b"\1" * 6, "raw", 16, 16, 4, 2, 4), b"\0" * 16)) + 4
    for realism, seed in ((1.01, 0), (0.333, 0), (0.5, fmt.MAX_SEED + 1), (0.5, -1)):
        with pytest.raises(fmt.WtkFormatError):
            Header(b"\1" * 6, "raw", 16, 16, 4, 2, 4, realism=realism, seed=seed).validate()
    body = bytearray(data[:-4])
    body[fmt._FIXED + 3] = 101  # realism byte above 100 hundredths
    with pytest.raises(fmt.WtkFormatError, match="realism"):
        fmt.unpack(bytes(body) + zlib.crc32(bytes(body)).to_bytes(4, "big"))


def test_data_efficient_gan_pieces() -> None:
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    y = diff_augment(x, ("color", "translation", "cutout"))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    a = torch.zeros(2, 3, 8, 8)
    assert diversity_loss(a, a, 0.02).item() == pytest.approx(0.02)
    assert diversity_loss(a, a + 0.1, 0.02).item() == 0.0  # past the target it asks nothing more


def test_stage2_attaches_a_decoder_and_keeps_the_model(tmp_path) -> None:
    data = _make_images(tmp_path / "data")
    first = train(_cfg(data, tmp_path / "s1", adversarial_weight=0.0, steps=3), quiet=True)
    cfg = _cfg(
        data,
        tmp_path / "s2",
        stage=2,
        init_from=str(first),
        level_noise=True,
        attach_decoder=True,
        steps=4,
        disc_warmup=2,
        disc_augment=["color", "translation", "cutout"],
        r1_weight=0.1,
        r1_every=2,
        diversity_weight=1.0,
        adversarial_weight=0.1,
    )
    out = train(cfg, quiet=True)
    assert (out / GENERATIVE_DECODER_NAME).is_file()
    assert read_model_id(out) == read_model_id(first)  # tokens, files and id unchanged
    assert (out / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()
    codec = Codec.from_pretrained(out)
    assert codec.model.has_generative_decoder
    noise_weights = codec.model.generative_decoder.up[0].noise[0].weight
    assert noise_weights.abs().sum() > 0  # the noise inputs were trained
    rows = [json.loads(line) for line in (tmp_path / "s2" / "metrics.jsonl").read_text().splitlines()]
    assert "div/loss" in rows[-1] and "adv/r1" in {k for r in rows for k in r}
    assert "rec/l1" not in rows[0]  # the first log window is the discriminator's warm-up


def test_stage2_continues_the_shipped_decoder_and_adds_a_head(tmp_path) -> None:
    """Stage 2 from a folder whose model has a generative decoder beside it starts from that decoder (not
    the stage-1 one widened again) and, with head_channels, gives it a full-resolution head that exports."""
    from wetok_train.state import initial_model

    data = _make_images(tmp_path / "data")
    model_dir, _ = _model_dir_and_image(tmp_path, 4)
    cfg = _cfg(data, tmp_path / "s2", stage=2, init_from=str(model_dir), level_noise=True, head_channels=8)
    shipped = Codec.from_pretrained(model_dir).model.decoder_for(1)
    start = initial_model(cfg)
    codes = start.tokens_to_codes(_tokens(start))
    noise = start.draw_noise(codes.shape, seed=1)  # the shipped decoder's maps, then the head's
    assert torch.allclose(start.decoder(codes, noise), shipped(codes, noise[:-1]), atol=1e-6)
    again = {"steps": 2, "attach_decoder": True, "adversarial_weight": 0.1}
    out = train(
        _cfg(
            data,
            tmp_path / "s3",
            stage=2,
            init_from=str(model_dir),
            level_noise=True,
            head_channels=8,
            **again,
        ),
        quiet=True,
    )
    assert Codec.from_pretrained(out).model.decoder_for(1).head.conv_in.out_channels == 8


def _model_dir_and_image(tmp_path, seed: int):
    """A model folder with a generative decoder beside the model, and a small PNG to compress."""
    from PIL import Image

    model_dir = tmp_path / "m"
    model = with_generative_decoder()
    Codec(model).save_pretrained(model_dir)
    model.save_generative_decoder(model_dir)
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(image)
    return model_dir, image


def test_cli_realism_seed_and_info(tmp_path) -> None:
    model_dir, image = _model_dir_and_image(tmp_path, 3)
    runner = CliRunner()
    r = runner.invoke(cli, ["compress", str(image), "-m", str(model_dir), "--realism", "0.5", "--seed", "7"])
    assert r.exit_code == 0, r.output
    assert "realism 0.50, seed 7" in r.output
    r = runner.invoke(cli, ["info", str(tmp_path / "a.wtk"), "--json"])
    assert r.exit_code == 0, r.output
    record = json.loads(r.output.strip().splitlines()[-1])
    assert (record["realism"], record["seed"]) == (0.5, 7)
    decoded = str(tmp_path / "a-decoded.png")
    r = runner.invoke(
        cli, ["decompress", str(tmp_path / "a.wtk"), "-m", str(model_dir), "-o", decoded, "--json"]
    )
    assert r.exit_code == 0, r.output
    record = json.loads(r.output.strip().splitlines()[-1])
    assert (record["realism"], record["seed"]) == (0.5, 7)
    plain = tmp_path / "plain"
    Codec(tiny_model()).save_pretrained(plain)
    r = runner.invoke(
        cli, ["compress", str(image), "-m", str(plain), "-o", str(tmp_path / "b.wtk"), "--realism", "1"]
    )
    assert r.exit_code == 2 and "no generative decoder" in r.output


def test_eval_rows_per_realism() -> None:
    from wetok.eval.evaluate import EvalOptions, run_eval

    rng = np.random.default_rng(4)
    images = [(f"i{k}", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for k in range(2)]
    options = EvalOptions(codecs=(), sweep=False, fid=False, perceptual="none")
    report = run_eval(images, [Codec(with_generative_decoder())], options)
    labels = [row["label"] for row in report.summary()]
    assert labels == [
        "wetok tiny realism 0.80",  # what decompress gives by default comes first
        "wetok tiny realism 0.00",
        "wetok tiny realism 1.00",
    ]
    plain = run_eval(images, [Codec(tiny_model())], options)
    assert [row["label"] for row in plain.summary()] == ["wetok tiny"]


def test_compare_page_shows_both_ends_of_realism(tmp_path) -> None:
    model_dir, image = _model_dir_and_image(tmp_path, 5)
    runner = CliRunner()
    assert runner.invoke(cli, ["compress", str(image), "-m", str(model_dir)]).exit_code == 0
    out = tmp_path / "d.png"
    args = [
        "decompress",
        str(tmp_path / "a.wtk"),
        "-m",
        str(model_dir),
        "-o",
        str(out),
        "--compare",
        str(image),
    ]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    page = (tmp_path / "d.html").read_text()
    assert "wetok realism 0" in page and "wetok realism 1" in page  # the file's 0.8 beside both ends


def test_version2_files_stream_like_version1() -> None:
    import io

    codec = Codec(with_generative_decoder())
    image = np.random.default_rng(6).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    data = codec.compress(image, realism=0.37, seed=fmt.MAX_SEED)
    assert fmt.read_stream(io.BytesIO(data)) == data
    with pytest.raises(fmt.WtkFormatError):
        fmt.read_stream(io.BytesIO(data[:12]))


def test_a_kept_checkpoint_exports_without_training(tmp_path) -> None:
    """``wetok train --export-from CHECKPOINT --out DIR``: the folder the run would have exported had it
    stopped there (its EMA decoder beside the unchanged model, its discriminator), never over a folder."""
    from safetensors.torch import load_file

    from wetok_train.checkpoint import load_checkpoint

    data = _make_images(tmp_path / "data")
    model_dir, _ = _model_dir_and_image(tmp_path, 5)
    run = tmp_path / "run"
    cfg = _cfg(data, run, stage=2, init_from=str(model_dir), level_noise=True, attach_decoder=True, steps=2)
    train(cfg, quiet=True)
    ckpt = run / "checkpoint.safetensors"
    runner = CliRunner()
    out = tmp_path / "peak"
    result = runner.invoke(cli, ["train", "--export-from", str(ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert read_model_id(out) == read_model_id(model_dir)
    ema = load_checkpoint(ckpt)["ema"]
    exported = load_file(str(out / GENERATIVE_DECODER_NAME))
    for key, value in exported.items():
        assert torch.equal(value, ema[f"decoder.{key}"].half()), key
    assert (out / "discriminator.safetensors").is_file()
    again = runner.invoke(cli, ["train", "--export-from", str(ckpt), "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output
