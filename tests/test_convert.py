"""Importing official checkpoints: conformance with the official code's outputs, configs, and refusals.

The fixtures in ``fixtures/official/`` are checkpoints in the release's layout (tiny widths, random weights)
with the indices, codes and reconstructions the unmodified official code computed from them.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from wetok.codec import Codec
from wetok.config import PRESETS, TokenizerConfig
from wetok.convert import (
    IMPORT_INFO_NAME,
    CheckpointError,
    config_from_release,
    convert_checkpoint,
    fit_model_prior,
    import_checkpoint,
    load_release_config,
    read_state_dict,
    stripped_index,
)
from wetok.modeldir import MODEL_ID_NAME, WEIGHTS_NAME, stored_model_id
from wetok.prior import PRIOR_NAME, Prior
from wetok.tokenizer import Tokenizer
from wetok_cli.main import cli

OFFICIAL = Path(__file__).parent / "fixtures" / "official"
CONFIGS = ["tiny_f8", "tiny_f16_gd"]


def vec(name: str, file: str) -> np.ndarray:
    return np.load(OFFICIAL / name / file)


def release_config(name: str) -> TokenizerConfig:
    return load_release_config(OFFICIAL / name / "config.json")


def official_state(name: str) -> dict[str, torch.Tensor]:
    return dict(torch.load(OFFICIAL / name / "official.ckpt", weights_only=True)["state_dict"])


def save_ckpt(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save({"state_dict": state}, path)
    return path


def run_official_path(model: Tokenizer, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """indices, codes and unclamped recon of the fixture input, as the official call path computes them."""
    indices = model.encode(torch.from_numpy(vec(name, "input.npy")))
    codes = model.tokens_to_codes(indices)
    noise = torch.from_numpy(vec(name, "noise.npy")) if model.config.generative else None
    with torch.no_grad():
        recon = model.decoder(codes, noise)
    return indices.numpy(), codes.numpy(), recon.numpy()


def assert_matches(model: Tokenizer, name: str, prefix: str = "") -> None:
    indices, codes, recon = run_official_path(model, name)
    np.testing.assert_array_equal(indices, vec(name, prefix + "indices.npy"))
    np.testing.assert_array_equal(codes, vec(name, prefix + "codes.npy"))
    np.testing.assert_allclose(recon, vec(name, prefix + "recon.npy"), atol=1e-4, rtol=0)


# -- conformance -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONFIGS)
def test_import_reproduces_official_outputs(name: str, tmp_path: Path) -> None:
    report = import_checkpoint(OFFICIAL / name / "official.ckpt", release_config(name), tmp_path / "m")
    model = Tokenizer.from_pretrained(tmp_path / "m")
    assert_matches(model, name)
    _, _, recon = run_official_path(model, name)
    assert np.abs(recon - vec(name, "recon_raw_weights.npy")).max() > 0.5  # the EMA weights, not the raw ones
    assert report.from_raw == () and report.ignored > 0  # every tensor from EMA; discriminator dropped
    assert model.weights_sha256 == report.weights_sha256
    info = json.loads((tmp_path / "m" / IMPORT_INFO_NAME).read_text())
    assert info["weights_sha256"] == report.weights_sha256 and len(info["source_sha256"]) == 64


def test_stage2_checkpoint_falls_back_to_raw_encoder(tmp_path: Path) -> None:
    name = "tiny_f16_gd"
    state = {k: v for k, v in official_state(name).items() if not k.startswith("model_ema.encoder")}
    model, report = convert_checkpoint(save_ckpt(state, tmp_path / "stage2.ckpt"), release_config(name))
    assert report.from_raw and all(n.startswith("encoder.") for n in report.from_raw)
    assert len(report.from_raw) == sum(k.startswith("encoder.") for k in model.state_dict())
    assert_matches(model, name, prefix="stage2_fallback/")


@pytest.mark.parametrize("fmt", ["plain", "safetensors"])
def test_plain_state_dict_and_safetensors(fmt: str, tmp_path: Path) -> None:
    name = "tiny_f8"
    state = official_state(name)
    if fmt == "plain":
        path = tmp_path / "plain.pt"
        torch.save(state, path)
    else:
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model, _ = convert_checkpoint(path, release_config(name))
    assert_matches(model, name)


def test_fp16_export(tmp_path: Path) -> None:
    import_checkpoint(
        OFFICIAL / "tiny_f8" / "official.ckpt", release_config("tiny_f8"), tmp_path / "m", dtype=torch.float16
    )
    assert {t.dtype for t in load_file(str(tmp_path / "m" / WEIGHTS_NAME)).values()} == {torch.float16}
    assert Tokenizer.from_pretrained(tmp_path / "m").dtype == torch.float32


# -- refusals ----------------------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("container", ["pickle-2", "pickle-5", "torch.save"])
def test_pickle_needing_code_execution_is_refused(container: str, tmp_path: Path) -> None:
    marker, path = tmp_path / "pwned", tmp_path / "evil.ckpt"
    payload = {"state_dict": {"encoder.x": _Payload(marker)}}
    if container.startswith("pickle"):
        path.write_bytes(pickle.dumps(payload, protocol=int(container[-1])))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match="needs code execution.*refused") as err:
        read_state_dict(path)
    assert not marker.exists()
    if container != "pickle-5":  # protocol 5 is refused at its first opcode, before the global is read
        assert re.search(r"it references (posix|nt)\.system", str(err.value))


@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"PK\x03\x04 truncated zip"])
def test_garbage_is_refused(content: bytes, tmp_path: Path) -> None:
    (tmp_path / "x.ckpt").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a loadable checkpoint"):
        read_state_dict(tmp_path / "x.ckpt")
    (tmp_path / "x.safetensors").write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        read_state_dict(tmp_path / "x.safetensors")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([1, 2, 3], "holds a list, not a state dict"),
        ({"state_dict": {"net.weight": torch.zeros(2)}}, "no encoder.* / decoder.* weights"),
    ],
)
def test_not_a_tokenizer_checkpoint(obj: object, message: str, tmp_path: Path) -> None:
    torch.save(obj, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match=message.replace("*", r"\*").replace(".", r"\.")):
        read_state_dict(tmp_path / "x.ckpt")


def test_missing_key_is_named(tmp_path: Path) -> None:
    state = official_state("tiny_f8")
    del state["decoder.conv_out.bias"], state["model_ema.decoderconv_outbias"]
    with pytest.raises(CheckpointError, match=r"lacks decoder\.conv_out\.bias \[3\]"):
        convert_checkpoint(save_ckpt(state, tmp_path / "c.ckpt"), release_config("tiny_f8"))


def test_wrong_preset_names_first_offending_key_and_both_shapes(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        import_checkpoint(
            OFFICIAL / "tiny_f8" / "official.ckpt", PRESETS["wetok-imagenet-f8"], tmp_path / "out"
        )
    assert str(err.value) == (
        "shape mismatch at encoder.conv_in.weight (from model_ema.encoderconv_inweight): "
        "checkpoint [32, 3, 3, 3], preset 'wetok-imagenet-f8' expects [256, 3, 3, 3]"
    )
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_wrong_tiny_config_names_first_offending_key() -> None:
    with pytest.raises(
        CheckpointError,
        match=r"encoder\.down\.3\.block\.0\.conv1\.weight.*"
        r"checkpoint \[64, 32, 3, 3\].*expects \[32, 32, 3, 3\]",
    ):
        convert_checkpoint(
            OFFICIAL / "tiny_f16_gd" / "official.ckpt",
            release_config("tiny_f16_gd").replace(ch_mult=(1, 1, 1, 1, 2)),
        )


def test_generative_mismatch_says_so() -> None:
    cfg = release_config("tiny_f16_gd").replace(generative=False)
    with pytest.raises(
        CheckpointError,
        match=r"decoder\.conv_in\.weight.*\[64, 32, 3, 3\].*\[64, 16, 3, 3\]"
        r".*is generative \(gan_decoder: true\)",
    ):
        convert_checkpoint(OFFICIAL / "tiny_f16_gd" / "official.ckpt", cfg)


def test_extra_checkpoint_tensors_are_refused() -> None:
    cfg = release_config("tiny_f8").replace(ch_mult=(1, 2, 2))  # one level fewer, all shared shapes equal
    with pytest.raises(CheckpointError, match=r"checkpoint has encoder\.down\.2\.downsample\.weight"):
        convert_checkpoint(OFFICIAL / "tiny_f8" / "official.ckpt", cfg)


def test_stripped_names_must_be_injective() -> None:
    with pytest.raises(CheckpointError, match="ambiguous"):
        stripped_index(["decoder.up.1.block.11.w", "decoder.up.11.block.1.w", "m.1.11.w", "m.11.1.w"])


# -- configs -----------------------------------------------------------------------------------------------
def _official_yaml_args(z: int, ch: int, ch_mult: list[int], **extra: object) -> dict[str, object]:
    dd = {
        "double_z": False,
        "z_channels": z,
        "resolution": 128,
        "in_channels": 3,
        "out_ch": 3,
        "ch": ch,
        "ch_mult": ch_mult,
        "num_res_blocks": 4,
    }
    return {
        "model": {
            "class_path": "src.WeTok.models.lfqgan.VQModel",
            "init_args": {"ddconfig": dd, "lossconfig": {"target": "x"}, "use_ema": True, **extra},
        }
    }


def _same_architecture(a: TokenizerConfig, b: TokenizerConfig) -> bool:
    return a.replace(name="") == b.replace(name="")


def test_release_yaml_layout_maps_to_the_presets() -> None:
    gd768 = _official_yaml_args(
        32, 256, [1, 1, 2, 2, 4, 8], n_embed=256, embed_dim=32, num_codebooks=4, gan_decoder=True
    )
    assert _same_architecture(config_from_release(gd768), PRESETS["wetok-gd-ratio768"])
    magvit2 = _official_yaml_args(18, 128, [1, 1, 2, 2, 4], n_embed=262144, embed_dim=18)
    assert _same_architecture(config_from_release(magvit2), PRESETS["magvit2-f16-2p18"])
    flat = {"ch": 256, "ch_mult": [1, 2, 2, 4], "num_res_blocks": 4, "z_channels": 64, "num_codebooks": 8}
    assert _same_architecture(config_from_release(flat), PRESETS["wetok-gd-ratio24"])
    assert config_from_release(PRESETS["tiny"].to_dict()) == PRESETS["tiny"]  # a wetok config.json works too


@pytest.mark.parametrize(
    ("hp", "message"),
    [
        ({"ch": 32, "ch_mult": [1, 2]}, "lacks num_res_blocks, z_channels"),
        (
            {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 16, "num_codebooks": 3},
            "not a multiple",
        ),
        (
            {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 16, "n_embed": 1024},
            "n_embed=1024",
        ),
        ({"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 16, "embed_dim": 8}, "embed_dim=8"),
        (
            {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 16, "token_factorization": True},
            "token_factorization",
        ),
        ({"ch": 30, "ch_mult": [1, 2], "num_res_blocks": 1, "z_channels": 16}, "invalid config"),
    ],
)
def test_bad_release_configs(hp: dict[str, object], message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        config_from_release(hp)


def test_yaml_config(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "GeneralDomain_compratio48_mscoco.yaml"
    path.write_text(yaml.safe_dump(_official_yaml_args(32, 256, [1, 2, 2, 4], num_codebooks=4)))
    assert _same_architecture(load_release_config(path), PRESETS["wetok-gd-ratio48"])


def test_yaml_without_pyyaml_asks_for_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)
    (tmp_path / "c.yaml").write_text("model: {}\n")
    with pytest.raises(CheckpointError, match=r"needs PyYAML \(pip install pyyaml\).*JSON"):
        load_release_config(tmp_path / "c.yaml")


def test_release_presets_have_the_release_shapes() -> None:
    expected = {
        "wetok-imagenet-f16": {
            "encoder.down.4.block.0.conv1.weight": [1024, 512, 3, 3],
            "encoder.down.4.block.0.nin_shortcut.weight": [1024, 512, 1, 1],
            "encoder.conv_out.weight": [32, 1024, 1, 1],
            "decoder.conv_in.weight": [1024, 32, 3, 3],
            "decoder.up.4.upsample.conv1.weight": [4096, 1024, 3, 3],
            "decoder.adaptive.0.gamma.weight": [256, 32],
            "decoder.conv_out.weight": [3, 256, 3, 3],
        },
        "wetok-gd-ratio768": {"decoder.conv_in.weight": [2048, 64, 3, 3]},
        "magvit2-f16-2p18": {"encoder.conv_out.weight": [18, 512, 1, 1]},
    }
    for preset, shapes in expected.items():
        with torch.device("meta"):
            state = Tokenizer(PRESETS[preset]).state_dict()
        stripped_index(state)  # injective for every released layout
        assert {k: list(state[k].shape) for k in shapes} == shapes


# -- output directory and CLI ------------------------------------------------------------------------------
def test_output_directory_rules(tmp_path: Path) -> None:
    ckpt, cfg, out = OFFICIAL / "tiny_f8" / "official.ckpt", release_config("tiny_f8"), tmp_path / "m"
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a directory"):
        import_checkpoint(ckpt, cfg, tmp_path / "file")
    out.mkdir()
    import_checkpoint(ckpt, cfg, out)  # an empty directory is fine
    with pytest.raises(CheckpointError, match="not empty; pass --force"):
        import_checkpoint(ckpt, cfg, out)
    import_checkpoint(ckpt, cfg, out, force=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not a wetok model directory"):
        import_checkpoint(ckpt, cfg, tmp_path / "other", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m", "other"]  # no temp dirs left


def test_cli_import(tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        str(OFFICIAL / "tiny_f16_gd" / "official.ckpt"),
        "--config",
        str(OFFICIAL / "tiny_f16_gd" / "config.json"),
        "-o",
        str(tmp_path / "m"),
    ]
    result = runner.invoke(cli, ["import", *args])
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "sha256" in result.stderr and "generative  yes" in result.stderr
    result = runner.invoke(cli, ["import", *args, "--force", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["g"] == 2 and summary["d_prime"] == 8 and summary["f"] == 16
    assert summary["weights_sha256"] == Tokenizer.from_pretrained(tmp_path / "m").weights_sha256


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--preset", "wetok-imagenet-f8"], 1, "shape mismatch at encoder.conv_in.weight"),
        (["--preset", "no-such-preset"], 2, "Invalid value for '--preset'"),
        ([], 2, "exactly one of --preset NAME or --config FILE"),
    ],
)
def test_cli_import_errors(extra: list[str], code: int, message: str, tmp_path: Path) -> None:
    args = [str(OFFICIAL / "tiny_f8" / "official.ckpt"), "-o", str(tmp_path / "m"), *extra]
    result = CliRunner().invoke(cli, ["import", *args])
    assert result.exit_code == code and message in result.stderr and "Traceback" not in result.output


def test_cli_refuses_a_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil.ckpt").write_bytes(pickle.dumps(_Payload(marker)))
    result = CliRunner().invoke(
        cli, ["import", str(tmp_path / "evil.ckpt"), "--preset", "tiny", "-o", str(tmp_path / "m")]
    )
    assert result.exit_code == 1 and "refused" in result.stderr and not marker.exists()


# -- fit-prior ---------------------------------------------------------------------------------------------
def _imported(tmp_path: Path) -> Path:
    out = tmp_path / "m"
    import_checkpoint(OFFICIAL / "tiny_f8" / "official.ckpt", release_config("tiny_f8"), out)
    return out


def _fixture_images(folder: Path) -> list[Path]:
    """The fixture input as a 64×64 PNG, and a 60×50 crop that needs padding (a second batch shape)."""
    folder.mkdir()
    rgb = ((vec("tiny_f8", "input.npy")[0].transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(rgb).save(folder / "a.png")
    Image.fromarray(rgb[:60, :50]).save(folder / "b.png")
    return [folder / "a.png", folder / "b.png"]


def test_import_writes_a_uniform_prior_and_fit_prior_replaces_it(tmp_path: Path) -> None:
    model_dir = _imported(tmp_path)
    uniform = Prior.load(model_dir)
    assert uniform.groups == 2 and uniform.group_bits == 8 and uniform.bits_per_token() == pytest.approx(16)
    imported_id = stored_model_id(model_dir)
    assert imported_id == Codec.from_pretrained(model_dir).model_id  # written by the import
    images = _fixture_images(tmp_path / "img")
    report = fit_model_prior(model_dir, images, batch_size=4, force=True, min_tokens=0)
    assert report["tokens"] == 8 * 8 + 8 * 7
    assert report["context"] < report["static"] and report["empirical_entropy"] <= report["static"]
    fitted = Prior.load(model_dir)
    tokens = torch.from_numpy(vec("tiny_f8", "indices.npy"))
    assert fitted.ideal_bits(tokens) < uniform.ideal_bits(tokens)
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(
        [IMPORT_INFO_NAME, PRIOR_NAME, WEIGHTS_NAME, MODEL_ID_NAME, "config.json", "context.json"]
    )
    # A new prior is a new model id, stored again by fit-prior.
    assert stored_model_id(model_dir) == Codec.from_pretrained(model_dir).model_id != imported_id


def test_fit_prior_refusals(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="not a wetok model directory"):
        fit_model_prior(tmp_path / "plain", [])
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(CheckpointError, match="bad.png: cannot read image"):
        fit_model_prior(_imported(tmp_path), [tmp_path / "bad.png"], force=True)


def test_cli_fit_prior(tmp_path: Path) -> None:
    model_dir = _imported(tmp_path)
    _fixture_images(tmp_path / "img")
    args = ["fit-prior", str(model_dir), str(tmp_path / "img"), "--json", "--min-tokens", "100"]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "new")])
    assert result.exit_code == 0, result.output
    model_id = Codec.from_pretrained(tmp_path / "new").model_id_hex
    summary = json.loads(result.stdout)
    assert {k: summary[k] for k in ("model_dir", "images", "tokens", "model_id")} == {
        "model_dir": str(tmp_path / "new"),
        "images": 2,
        "tokens": 120,
        "model_id": model_id,
    }
    assert {"static", "context", "empirical_entropy"} <= set(summary) and "bits/token" in result.stderr
    result = CliRunner().invoke(cli, ["fit-prior", str(tmp_path / "img"), str(tmp_path / "img" / "a.png")])
    assert result.exit_code == 1 and "not a wetok model directory" in result.stderr
