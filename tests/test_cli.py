"""The ``wetok`` command line through Click's CliRunner: outputs, names, stdio, errors and exit codes.

Every model is a tiny one built in a temporary folder and found through ``$WETOK_MODELS``; the bundled and
user model folders are hidden, so no test depends on the bundled default model.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from tests.conftest import tiny_model
from wetok.codec import Codec
from wetok.format import MAGIC
from wetok.prior import Prior
from wetok_cli import common, outputs
from wetok_cli.main import cli


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` and ``other``: two tiny models (different weights) in one registry folder."""
    root = tmp_path_factory.mktemp("models")
    for name, seed in (("tiny", 0), ("other", 1)):
        model = tiny_model(seed)
        model.save_pretrained(root / name)
        Prior.uniform(model.config.groups, model.config.group_bits).save(root / name)
    return root


@pytest.fixture
def env(model_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Registry = ``model_root`` only; cwd = an empty temporary folder holding ``a.png`` and ``b.png``."""
    import wetok.zoo

    monkeypatch.setenv("WETOK_MODELS", str(model_root))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("WETOK_DEBUG", raising=False)
    monkeypatch.setattr(wetok.zoo, "BUNDLED_DIR", tmp_path / "no-bundled-models")
    monkeypatch.chdir(tmp_path)
    for name, seed in (("a.png", 0), ("b.png", 1)):
        make_image(tmp_path / name, seed)
    return tmp_path


def make_image(path: Path, seed: int = 0, size: tuple[int, int] = (30, 22)) -> Path:
    """A smooth colour image whose sides are not multiples of f (exercises padding and cropping)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]] / max(size)
    a = rng.uniform(0.2, 1.0, (3, 2))
    rgb = np.stack([a[c, 0] * xx + a[c, 1] * yy for c in range(3)], -1)
    Image.fromarray((rgb / rgb.max() * 255).astype(np.uint8)).save(path)
    return path


def wetok(*args: str, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, prog_name="wetok")


def assert_one_error(result: Result, code: int, *fragments: str) -> None:
    """Exit ``code``, one stderr line holding every fragment, no traceback, nothing on stdout."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert all(f in lines[0] for f in fragments), lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


# -- the main job --------------------------------------------------------------------------------------
def test_compress_decompress_round_trip_beside_inputs(env: Path, model_root: Path) -> None:
    result = wetok("compress", "a.png", "--model", "tiny")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # summaries go to stderr
    assert "a.png -> a.wtk: 30x22" in result.stderr and "bpp" in result.stderr
    data = (env / "a.wtk").read_bytes()
    assert data.startswith(MAGIC)
    (env / "a.png").rename(env / "orig.png")
    result = wetok("decompress", "a.wtk", "--reference", "orig.png")
    assert result.exit_code == 0, result.output
    assert "a.wtk -> a.png: 30x22" in result.stderr and "PSNR" in result.stderr
    codec = Codec.from_pretrained(model_root / "tiny")
    assert data == codec.compress(Image.open(env / "orig.png"))
    expected = np.asarray(codec.decompress(data).image)
    assert np.array_equal(np.asarray(Image.open(env / "a.png")), expected)  # PNG output is lossless


def test_stdin_to_stdout(env: Path) -> None:
    compressed = wetok("compress", "-", "--model", "tiny", input=(env / "a.png").read_bytes())
    assert compressed.exit_code == 0, compressed.output
    assert compressed.stdout_bytes.startswith(MAGIC) and "<stdin> -> <stdout>" in compressed.stderr
    image = wetok("decompress", "-", input=compressed.stdout_bytes)
    assert image.exit_code == 0, image.output
    assert Image.open(io.BytesIO(image.stdout_bytes)).size == (30, 22)
    assert not any(p.suffix == ".wtk" for p in env.iterdir())


def test_output_file_and_format(env: Path) -> None:
    assert wetok("compress", "a.png", "-m", "tiny", "-o", "x.wtk").exit_code == 0
    assert wetok("decompress", "x.wtk", "-o", "y.jpg").exit_code == 0
    assert Image.open(env / "y.jpg").format == "JPEG"  # format from the suffix
    assert wetok("decompress", "x.wtk", "-o", "z.img", "--format", "webp").exit_code == 0
    assert Image.open(env / "z.img").format == "WEBP"
    assert wetok("decompress", "x.wtk", "-o", "out/").exit_code == 0
    assert (env / "out" / "x.png").is_file()


def test_many_inputs_folders_globs_and_json(env: Path) -> None:
    (env / "photos" / "sub").mkdir(parents=True)
    make_image(env / "photos" / "p.png", 2)
    make_image(env / "photos" / "sub" / "q.png", 3)
    result = wetok("compress", "photos", "a.png", "-m", "tiny", "-o", "out", "--json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["output"] for r in records] == ["out/p.wtk", "out/sub/q.wtk", "out/a.wtk"]
    assert all(r["width"] == 30 and r["bytes"] == (env / r["output"]).stat().st_size for r in records)
    result = wetok("decompress", "out/**/*.wtk", "-o", "dec", "-q")  # quoted glob, expanded by wetok
    assert result.exit_code == 0 and result.output == ""
    assert sorted(p.relative_to(env / "dec").as_posix() for p in (env / "dec").rglob("*.png")) == [
        "a.png",
        "p.png",
        "sub/q.png",
    ]


def test_one_failing_input_does_not_stop_the_others(env: Path) -> None:
    (env / "bad.png").write_bytes(b"not an image at all")
    result = wetok("compress", "a.png", "bad.png", "missing.png", "b.png", "-m", "tiny")
    assert result.exit_code == 1
    assert (env / "a.wtk").is_file() and (env / "b.wtk").is_file() and not (env / "bad.wtk").exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: bad.png: not an image, or a format Pillow cannot read",
        "Error: missing.png: No such file or directory",
    ]


def test_quiet_verbose_and_progress_on_a_terminal(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = wetok("compress", "a.png", "b.png", "-m", "tiny", "--quiet", "--device", "auto")
    assert quiet.exit_code == 0 and quiet.output == ""
    verbose = wetok("compress", "a.png", "-m", "tiny", "-v", "-f", "--device", "cpu")
    assert "loaded model tiny" in verbose.stderr and "encoded in" in verbose.stderr
    plain = wetok("compress", "a.png", "b.png", "-m", "tiny", "-f")
    assert "\x1b" not in plain.stderr and len(plain.stderr.splitlines()) == 2  # no bar off a terminal
    monkeypatch.setattr(common, "isatty", lambda stream: True)
    with_bar = wetok("compress", "a.png", "b.png", "-m", "tiny", "-f")
    assert with_bar.exit_code == 0 and "b.png -> b.wtk" in with_bar.stderr


# -- refusing, and writing safely ----------------------------------------------------------------------
def test_refuses_to_overwrite_without_force(env: Path) -> None:
    (env / "a.wtk").write_bytes(b"keep me")
    assert_one_error(wetok("compress", "a.png", "-m", "tiny"), 1, "a.wtk already exists", "--force")
    assert (env / "a.wtk").read_bytes() == b"keep me"
    assert wetok("compress", "a.png", "-m", "tiny", "--force").exit_code == 0
    assert (env / "a.wtk").read_bytes().startswith(MAGIC)


def test_two_inputs_never_write_one_output(env: Path) -> None:
    make_image(env / "a.jpg", 5)
    result = wetok("compress", "a.png", "a.jpg", "-m", "tiny", "--force")
    assert result.exit_code == 1 and "a.wtk was already written by another input" in result.stderr


def test_output_is_atomic(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = env / "t.bin"
    target.write_bytes(b"old")

    def crash(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        outputs.write_output(target, b"new contents", force=True)
    assert target.read_bytes() == b"old" and sorted(p.name for p in env.iterdir() if "t.bin" in p.name) == [
        "t.bin"
    ]  # no temporary left behind


def test_refuses_binary_to_a_terminal(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "isatty", lambda stream: True)
    assert_one_error(wetok("compress", "a.png", "-m", "tiny", "-o", "-"), 2, "terminal")


# -- errors: one line, the right exit code --------------------------------------------------------------
@pytest.fixture
def tiny_wtk(env: Path) -> bytes:
    assert wetok("compress", "a.png", "-m", "tiny").exit_code == 0
    return (env / "a.wtk").read_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "truncated .wtk file"),
        (b"GIF89a not a wtk file", "not a .wtk file"),
        ("flip", "CRC-32 mismatch"),
        ("truncate", "corrupted or truncated"),
    ],
)
def test_corrupt_files(env: Path, tiny_wtk: bytes, content: bytes | str, message: str) -> None:
    data = bytearray(tiny_wtk)
    if content == "flip":
        data[len(data) // 2] ^= 0x10
    elif content == "truncate":
        data = data[:-7]
    else:
        data = bytearray(content)
    (env / "bad.wtk").write_bytes(bytes(data))
    assert_one_error(wetok("decompress", "bad.wtk"), 1, "bad.wtk", message)
    assert_one_error(wetok("info", "bad.wtk"), 1, "bad.wtk", message)
    assert not (env / "bad.png").exists()


def test_wrong_and_unknown_models(
    env: Path, tiny_wtk: bytes, model_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fp = Codec.from_pretrained(model_root / "tiny").model_id_hex
    assert_one_error(
        wetok("decompress", "a.wtk", "-o", "x.png", "--model", "other"), 1, f"needs model {fp} (tiny)"
    )
    monkeypatch.setenv("WETOK_MODELS", str(env / "empty"))
    assert_one_error(
        wetok("decompress", "a.wtk", "-o", "x.png"), 1, f"no installed model has id {fp}", "--model"
    )
    result = wetok("decompress", "a.wtk", "-o", "x.png", "-m", str(model_root))  # a folder of models
    assert result.exit_code == 0, result.output
    assert_one_error(wetok("compress", "b.png", "--model", "nosuch"), 2, "no model named 'nosuch'")


def test_no_default_model_is_one_clear_line(env: Path) -> None:
    assert_one_error(wetok("compress", "a.png"), 2, "no default model installed; pass --model")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["compress", "a.png", "-m", "tiny", "-o", "-", "--json"], "--json needs stdout"),
        (["compress", "a.png", "b.png", "-m", "tiny", "-o", "-"], "takes a single input"),
        (["compress", "-", "-", "-m", "tiny"], "only once"),
    ],
)
def test_usage_problems_exit_2(env: Path, args: list[str], fragment: str) -> None:
    assert_one_error(wetok(*args), 2, fragment)


def test_click_usage_errors_exit_2(env: Path) -> None:
    assert wetok("compress").exit_code == 2
    assert wetok("compress", "a.png", "--mode", "zip").exit_code == 2
    assert wetok("frobnicate").exit_code == 2


def test_debug_shows_the_exception(env: Path) -> None:
    (env / "bad.png").write_bytes(b"nope")
    result = wetok("--debug", "compress", "bad.png", "-m", "tiny")
    assert type(result.exception).__name__ == "UnidentifiedImageError"


# -- info, models, version, completion, eval -----------------------------------------------------------
def test_info_table_and_json(env: Path, tiny_wtk: bytes) -> None:
    table = wetok("info", "a.wtk")
    assert table.exit_code == 0, table.output
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["file", "model", "size"] and row.split()[:3] == ["a.wtk", "tiny", "30x22"]
    record = json.loads(wetok("info", "a.wtk", "--json").stdout)
    assert record["bytes"] == len(tiny_wtk) and record["model"] == "tiny"
    assert record["bpp"] == pytest.approx(8 * len(tiny_wtk) / (30 * 22))
    assert record["bits_per_token"] == pytest.approx(8 * record["payload_bytes"] / record["tokens"])
    assert record["ideal_bytes"] == pytest.approx(len(tiny_wtk))  # uniform prior: raw is ideal


def test_models(env: Path) -> None:
    records = [json.loads(line) for line in wetok("models", "--json").stdout.splitlines()]
    assert [(r["name"], r["f"], r["bits_per_token"], r["source"]) for r in records] == [
        ("other", 2, 8, "WETOK_MODELS"),
        ("tiny", 2, 8, "WETOK_MODELS"),
    ]
    assert wetok("models").stdout.splitlines()[0].split()[:3] == ["name", "source", "f"]


def test_version_and_help() -> None:
    result = wetok("--version")
    assert result.exit_code == 0 and result.stdout.startswith("wetok ") and "torch " in result.stdout
    assert "compress" in wetok("--help").stdout
    assert wetok("eval", "--help").exit_code == 0


def test_shell_completion() -> None:
    env = {"_WETOK_COMPLETE": "bash_complete", "COMP_WORDS": "wetok dec", "COMP_CWORD": "1"}
    result = CliRunner().invoke(cli, [], env=env, prog_name="wetok")
    assert "decompress" in result.stdout


# -- hostile options and streams (issue 28) -----------------------------------------------------------------
@pytest.mark.parametrize("command", ["compress", "decompress", "eval"])
@pytest.mark.parametrize("value", ["nan", "-NaN"])
def test_realism_nan_is_a_usage_error(env: Path, command: str, value: str) -> None:
    """``FloatRange(0, 1)`` lets NaN through (it compares false with both ends)."""
    result = wetok(command, "a.png", "--realism", value)
    assert result.exit_code == 2 and "'--realism'" in result.stderr and "internal" not in result.output


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["info", "--help"]])
@pytest.mark.parametrize("redirect", [">&-", "> /dev/full"])
def test_help_and_version_to_a_closed_or_full_stdout_fail(args: list[str], redirect: str) -> None:
    """They run while the command line is parsed, before the commands' own error handling."""
    import shlex
    import subprocess
    import sys

    command = " ".join(map(shlex.quote, [sys.executable, "-m", "wetok_cli.main", *args])) + " " + redirect
    done = subprocess.run(["bash", "-c", command], capture_output=True, timeout=120)
    stderr = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr
    assert "stdout is closed" in stderr or "No space left on device" in stderr
