"""Attack and carelessness cases (issue 13): what a hostile or careless user has tried, and what must hold.

Promises (docs/security.md): no file wetok reads runs code; nothing is written outside the named output
and nothing replaced without ``--force``; memory is bounded before it is allocated; user mistakes get one
line naming the file or option, exit status 2 for bad options.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import stat
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from tests import test_cli
from tests.test_cli import assert_one_error, make_image, wetok
from wetok.errors import WtkFormatError
from wetok.format import MAGIC, MAX_HEADER_BYTES, Header, pack, read_stream
from wetok.image import ImageConversionWarning, open_image
from wetok.prior import Prior
from wetok_cli.main import cli
from wetok_train.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint

env, model_root = test_cli.env, test_cli.model_root  # the CLI tests' fixtures: tiny models in a registry


class _Evil:
    """Unpickling this creates ``marker``: proof that a load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def _evil_checkpoint(path: Path, marker: Path, *, raw_pickle: bool = False) -> Path:
    payload = {"step": 1, "config": {}, "ema": _Evil(marker)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw_pickle:
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    for i in range(4):
        make_image(folder / f"img{i}.png", seed=i, size=(40, 40))
    return folder


def train_cli(data: Path, out: Path, *args: str) -> Result:
    common = [
        "-s",
        'model="tiny"',
        "-s",
        "crop=32",
        "-s",
        "batch_size=2",
        "-s",
        'perceptual="none"',
        "-s",
        "adversarial_weight=0",
        "-s",
        "prior_images=2",
        "-s",
        "log_every=1",
        "-q",
    ]
    return CliRunner().invoke(cli, ["train", *common, "--data", str(data), "--out", str(out), *args])


# -- 1. no code execution through training checkpoints -------------------------------------------------------
@pytest.mark.parametrize("name", ["checkpoint.pt", CHECKPOINT_NAME])
@pytest.mark.parametrize("raw_pickle", [False, True])
def test_resume_never_unpickles(tmp_path: Path, data: Path, name: str, raw_pickle: bool) -> None:
    marker = tmp_path / "pwned"
    _evil_checkpoint(tmp_path / "run" / name, marker, raw_pickle=raw_pickle)
    result = train_cli(data, tmp_path / "run", "--resume", "-s", "steps=1")
    assert result.exit_code == 2, result.output
    assert "legacy pickle checkpoint" in result.output and len(result.output.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("as_dir", [False, True])
def test_stage2_init_from_never_unpickles(tmp_path: Path, data: Path, as_dir: bool) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "stage1" / "checkpoint.pt", marker)
    source = evil.parent if as_dir else evil
    result = train_cli(data, tmp_path / "run", "--stage", "2", "--init-from", str(source), "-s", "steps=1")
    assert result.exit_code == 2, result.output
    assert "legacy pickle checkpoint" in result.output
    assert not marker.exists()


def test_checkpoint_loader_refuses_pickles_and_garbage(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for path in (
        _evil_checkpoint(tmp_path / "a.safetensors", marker, raw_pickle=True),
        _evil_checkpoint(tmp_path / "b.bin", marker),
    ):
        with pytest.raises(CheckpointError, match="legacy pickle"):
            load_checkpoint(path)
    (tmp_path / "c.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(CheckpointError, match="not a wetok training checkpoint"):
        load_checkpoint(tmp_path / "c.safetensors")
    assert not marker.exists()


def test_checkpoint_round_trips_optimizer_and_rng_types(tmp_path: Path) -> None:
    import random

    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], betas=(0.5, 0.9))
    opt.zero_grad()
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    payload = {
        "step": 4,
        "opt": opt.state_dict(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "disc": None,
        "nan": float("nan"),
    }
    save_checkpoint(payload, tmp_path / CHECKPOINT_NAME)
    back = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert back["opt"]["param_groups"] == opt.state_dict()["param_groups"]  # tuples and int keys kept
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert back["python"] == payload["python"] and back["disc"] is None and back["nan"] != back["nan"]
    assert all(np.array_equal(a, b) for a, b in zip(back["numpy"], payload["numpy"], strict=True))
    assert torch.equal(back["torch"], payload["torch"])


# -- 3. no lost training work ------------------------------------------------------------------------------
def test_train_into_existing_run_needs_resume_or_force(tmp_path: Path, data: Path) -> None:
    run = tmp_path / "run"
    assert train_cli(data, run, "-s", "steps=2").exit_code == 0
    before = (run / CHECKPOINT_NAME).read_bytes()
    model_before = (run / "model" / "model.safetensors").read_bytes()
    result = train_cli(data, run, "-s", "steps=1")
    assert result.exit_code == 2 and "--resume" in result.output and "--force" in result.output
    assert (run / CHECKPOINT_NAME).read_bytes() == before
    assert (run / "model" / "model.safetensors").read_bytes() == model_before
    assert train_cli(data, run, "-s", "steps=3", "--resume").exit_code == 0
    assert load_checkpoint(run / CHECKPOINT_NAME)["step"] == 3
    assert train_cli(data, run, "-s", "steps=1", "--force").exit_code == 0
    assert load_checkpoint(run / CHECKPOINT_NAME)["step"] == 1


def test_never_saves_an_older_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint({"step": 5}, path)
    with pytest.raises(CheckpointError, match="later step 5"):
        save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 5


def test_resume_without_checkpoint_is_one_line(tmp_path: Path, data: Path) -> None:
    result = train_cli(data, tmp_path / "empty", "--resume", "-s", "steps=1")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "no checkpoint" in result.output


def test_safetensors_header_starting_with_pickle_byte_still_loads(tmp_path: Path) -> None:
    """A header length of 0x..80 makes the first byte 0x80, a pickle's first byte: not a legacy file."""
    for n in range(256):
        path = tmp_path / f"{n}.safetensors"
        save_checkpoint({"step": 1, "pad": "x" * n, "t": torch.zeros(2)}, path)
        if path.read_bytes()[0] == 0x80:
            assert load_checkpoint(path)["pad"] == "x" * n
            return
    pytest.fail("no padding gave a header length starting with 0x80")


# -- 2. outputs: write into devices and FIFOs, replace only regular files, never the input ----------------
def test_output_fifo_is_written_into(env: Path) -> None:
    import threading

    fifo = env / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = wetok("compress", "a.png", "-m", "tiny", "-o", str(fifo), "--force")
    reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and got and got[0].startswith(MAGIC)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="mknod needs root")
def test_output_char_device_is_written_into_not_replaced(env: Path) -> None:
    null = env / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a private /dev/null
    for args in ([], ["--force"]):
        result = wetok("compress", "a.png", "-m", "tiny", "-o", str(null), *args)
        assert result.exit_code == 0, result.output
        assert stat.S_ISCHR(os.lstat(null).st_mode)


def test_output_dev_stdout_goes_to_stdout(env: Path) -> None:
    result = wetok("compress", "a.png", "-m", "tiny", "-o", "/dev/stdout")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(MAGIC)


def test_output_symlink_needs_force_and_keeps_the_link(env: Path) -> None:
    target = env / "target.wtk"
    target.write_bytes(b"old")
    (env / "link.wtk").symlink_to(target)
    assert_one_error(wetok("compress", "a.png", "-m", "tiny", "-o", "link.wtk"), 1, "already exists")
    assert target.read_bytes() == b"old"
    assert wetok("compress", "a.png", "-m", "tiny", "-o", "link.wtk", "--force").exit_code == 0
    assert (env / "link.wtk").is_symlink() and target.read_bytes().startswith(MAGIC)


def test_output_dangling_symlink_exists_and_is_never_followed(env: Path) -> None:
    (env / "dangling.wtk").symlink_to(env / "elsewhere" / "created.wtk")
    assert_one_error(wetok("compress", "a.png", "-m", "tiny", "-o", "dangling.wtk"), 1, "already exists")
    assert_one_error(
        wetok("compress", "a.png", "-m", "tiny", "-o", "dangling.wtk", "--force"),
        1,
        "symbolic link to nothing",
    )
    assert not (env / "elsewhere").exists()


def test_output_is_never_the_input_even_with_force(env: Path) -> None:
    original = (env / "a.png").read_bytes()
    os.link(env / "a.png", env / "hard.wtk")
    (env / "soft.wtk").symlink_to(env / "a.png")
    for out in ("a.png", "hard.wtk", "soft.wtk"):
        assert_one_error(
            wetok("compress", "a.png", "-m", "tiny", "-o", out, "--force"), 1, "input file itself"
        )
    assert (env / "a.png").read_bytes() == original
    assert wetok("compress", "a.png", "-m", "tiny").exit_code == 0
    assert_one_error(wetok("decompress", "a.wtk", "-o", "a.wtk", "--force"), 1, "input file itself")
    assert (env / "a.wtk").read_bytes().startswith(MAGIC)


# -- 5. bounded reads ----------------------------------------------------------------------------------
class _CountingZeros(io.RawIOBase):
    """``size`` zero bytes (``prefix`` first), counting what is read: /dev/zero, but finite."""

    def __init__(self, size: int, prefix: bytes = b"") -> None:
        self.left, self.prefix, self.read_total = size, prefix, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:
        n = min(len(buffer), self.left)
        chunk = (self.prefix + bytes(n))[:n]
        self.prefix = self.prefix[n:]
        buffer[:n] = chunk
        self.left -= n
        self.read_total += n
        return n


def test_wtk_read_stops_after_a_bad_header() -> None:
    stream = _CountingZeros(64 << 20)
    with pytest.raises(WtkFormatError, match="bad magic"):
        read_stream(stream)
    assert stream.read_total <= MAX_HEADER_BYTES


def test_wtk_read_stops_after_what_the_header_promises() -> None:
    header = Header(bytes(6), "raw", 8, 8, 4, 2, 4)
    file = pack(header, bytes(header.raw_payload_bytes))
    stream = _CountingZeros(64 << 20, prefix=file)
    with pytest.raises(WtkFormatError, match="longer than its header allows"):
        read_stream(stream)
    assert stream.read_total <= len(file) + 1


def test_info_on_endless_stdin_reads_a_few_bytes(env: Path) -> None:
    stream = _CountingZeros(64 << 20)
    result = CliRunner().invoke(cli, ["info", "-"], input=io.BufferedReader(stream))
    assert result.exit_code == 1 and "bad magic" in result.output
    assert stream.read_total <= 1 << 16  # one buffered read at most, not 64 MiB


# -- 6. one pixel limit, checked before allocating --------------------------------------------------------
def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A 1-bit PNG that claims ``width x height`` pixels in 57 bytes (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_png_bomb_refused_before_decoding(env: Path) -> None:
    _png_header_only(env / "bomb.png", 13000, 13000)  # under Pillow's own 2x bomb error, over its limit
    result = wetok("compress", "bomb.png", "-m", "tiny")
    assert_one_error(result, 1, "13000x13000", "above the limit", "--max-pixels")


def test_pixel_limit_flag_and_env_on_both_sides(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert_one_error(wetok("--max-pixels", "100", "compress", "a.png", "-m", "tiny"), 1, "above the limit")
    assert wetok("compress", "a.png", "-m", "tiny").exit_code == 0  # the flag does not outlive its command
    monkeypatch.setenv("WETOK_MAX_PIXELS", "100")
    assert_one_error(
        wetok("decompress", "a.wtk", "-o", "c.png"), 1, "the file's image is 30x22", "above the limit"
    )
    assert not (env / "c.png").exists()
    result = wetok("--max-pixels", "1000", "decompress", "a.wtk", "-o", "d.png")
    assert result.exit_code == 0, result.output


def test_memory_estimate_fails_fast(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wetok import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 10)
    assert_one_error(wetok("compress", "a.png", "-m", "tiny"), 1, "needs about", "GiB to encode")


# -- 8. EXIF orientation; 13. image modes and frames -----------------------------------------------------
def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise (a portrait phone photo)
    Image.new("RGB", (30, 20), (200, 30, 30)).save(tmp_path / "phone.jpg", exif=exif)
    assert open_image(tmp_path / "phone.jpg").shape == (30, 20, 3)


def test_int_and_float_images_are_not_black(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.int32), (8, 1))
    Image.fromarray(ramp, mode="I").save(tmp_path / "i.tif")
    Image.fromarray((ramp / 255).astype(np.float32), mode="F").save(tmp_path / "f.tif")
    for name in ("i.tif", "f.tif"):
        rgb = open_image(tmp_path / name)
        assert abs(int(rgb[0, -1, 0]) - 252) <= 1 and rgb[0, 0, 0] == 0, name


def test_multi_frame_input_warns(env: Path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(env / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(ImageConversionWarning, match="2 frames"):
        open_image(env / "anim.gif")
    result = wetok("compress", "anim.gif", "-m", "tiny", "-o", "anim.wtk")
    assert result.exit_code == 0 and "only the first" in result.stderr


# -- 7. broken or shadowing model folders ------------------------------------------------------------------
@pytest.fixture
def broken_registry(env: Path, model_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The registry plus a half-copied model (truncated weights) and one with a bad config.json."""
    extra = env / "more-models"
    for name in ("half", "badconfig"):
        shutil.copytree(model_root / "tiny", extra / name)
    weights = extra / "half" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (extra / "half" / "model_id.json").unlink(missing_ok=True)
    (extra / "badconfig" / "config.json").write_text('{"ch": "32"')
    monkeypatch.setenv("WETOK_MODELS", os.pathsep.join([str(extra), str(model_root)]))
    assert wetok("compress", "a.png", "-m", str(model_root / "tiny")).exit_code == 0
    return extra


def test_broken_model_folders_are_skipped_with_a_warning(broken_registry: Path, monkeypatch) -> None:
    import wetok.zoo as zoo

    for args in (["decompress", "a.wtk", "-o", "out.png"], ["info", "a.wtk"]):
        monkeypatch.setattr(zoo, "_warned", set())  # once per process: these stand for two processes
        result = wetok(*args)
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if "broken model folder" in line]
        assert len(warnings) == 2 and any("half" in w for w in warnings), result.stderr
    result = wetok("models")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "broken" in rows["half"] and "broken" in rows["badconfig"] and "broken" not in rows["tiny"]


def test_user_default_does_not_hide_the_bundled_model(env: Path, model_root: Path, monkeypatch) -> None:
    import wetok.zoo as zoo

    bundled = env / "bundled"
    shutil.copytree(model_root / "tiny", bundled / "default")
    monkeypatch.setattr(zoo, "BUNDLED_DIR", bundled)
    assert wetok("compress", "a.png", "-o", "bundled.wtk").exit_code == 0  # made with the bundled default
    user = env / "user-models"
    shutil.copytree(model_root / "other", user / "default")
    monkeypatch.setenv("WETOK_MODELS", str(user))
    result = wetok("decompress", "bundled.wtk", "-o", "back.png")
    assert result.exit_code == 0, result.output
    assert "hides the bundled model" in result.stderr
    assert "(hidden)" in wetok("models").stdout


def test_names_with_newlines_and_escapes_are_printed_escaped(env: Path) -> None:
    name = "evil\n\x1b[2J.png"
    shutil.copy(env / "a.png", env / name)
    result = wetok("compress", name, "-m", "tiny")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "evil\\n\\x1b[2J.png" in result.stderr
    (env / "bad\x1b]0;title\x07.wtk").write_bytes(b"garbage")
    result = wetok("info", "bad\x1b]0;title\x07.wtk")
    assert "\x1b" not in result.output and "\x07" not in result.output


# -- 4. fit-prior makes a new model; it never orphans files made with the old one --------------------------
def test_fit_prior_writes_a_new_model_and_keeps_old_files_decodable(env: Path, model_root: Path) -> None:
    model = env / "mine"
    shutil.copytree(model_root / "tiny", model)
    make_image(env / "big.png", size=(64, 64))  # 32 x 32 = 1024 tokens at f = 2
    assert wetok("compress", "a.png", "-m", str(model), "-o", "old.wtk").exit_code == 0
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    result = wetok("fit-prior", str(model), "big.png")
    assert result.exit_code == 2 and "-o NEW_DIR" in result.output
    result = wetok("fit-prior", str(model), "big.png", "-o", "fitted")
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before  # the old model is untouched
    assert wetok("decompress", "old.wtk", "-m", str(model), "-o", "old.png").exit_code == 0
    assert Prior.load(env / "fitted").bits_per_token() < 8  # fitted, not uniform
    assert stat.S_IMODE(os.stat(env / "fitted").st_mode) == 0o777 & ~_umask()


def test_fit_prior_refuses_too_few_tokens(env: Path, model_root: Path) -> None:
    result = wetok("fit-prior", str(model_root / "tiny"), "a.png", "-o", "fitted")  # 15 x 11 tokens (f = 2)
    assert_one_error(result, 1, "only 165 tokens", "at least 1024")
    assert not (env / "fitted").exists()


# -- 13. imported model folders get the usual permissions ------------------------------------------------
def test_imported_model_folder_is_not_private(tmp_path: Path) -> None:
    from tests.test_convert import OFFICIAL, release_config
    from wetok.convert import import_checkpoint

    import_checkpoint(OFFICIAL / "tiny_f8" / "official.ckpt", release_config("tiny_f8"), tmp_path / "m")
    assert stat.S_IMODE(os.stat(tmp_path / "m").st_mode) == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# -- 12. SIGTERM cleans temporary files as Ctrl-C does ---------------------------------------------------
def test_sigterm_while_writing_leaves_no_part_file(env: Path, model_root: Path) -> None:
    import subprocess
    import sys

    script = (
        "import os, signal, sys\n"
        "import wetok.fileio as fileio\n"
        "real = fileio.os.fsync\n"
        "def fsync_then_term(fd):\n"
        "    real(fd)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)  # arrives while the temporary file exists\n"
        "fileio.os.fsync = fsync_then_term\n"
        "from wetok_cli.main import cli\n"
        "cli(['compress', 'a.png', '-m', 'tiny', '-o', 'out.wtk'], prog_name='wetok')\n"
    )
    env_vars = {**os.environ, "WETOK_MODELS": str(model_root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=env, env=env_vars, capture_output=True, timeout=120
    )
    assert done.returncode == 143, done.stderr.decode()
    assert "terminated" in done.stderr.decode()
    assert not list(env.glob(".*.part")) and not (env / "out.wtk").exists()


# -- 9. model configs: types and ranges checked before any tensor is built ----------------------------------
@pytest.mark.parametrize(
    "change",
    [
        {"num_res_blocks": 100000},
        {"ch": "32"},
        {"num_res_blocks": 1.5},
        {"entropy_temperature": "hot"},
        {"entropy_temperature": float("nan")},
        {"ch_mult": [1, "2"]},
        {"ch_mult": list(range(1, 20))},
        {"generative": "yes"},
        {"ch": 4096, "ch_mult": [64, 64]},  # in range one by one, billions of weights together
    ],
)
def test_model_config_values_are_checked(change: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from wetok.config import TokenizerConfig
    from wetok.errors import ConfigError

    monkeypatch.setattr(torch.nn.Conv2d, "__init__", _no_tensors)  # nothing may be built
    with pytest.raises(ConfigError, match="model config|parameters"):
        TokenizerConfig.from_dict({**TokenizerConfig().to_dict(), **change})


def _no_tensors(*args: object, **kwargs: object) -> None:
    raise AssertionError("a layer was built from an invalid config")


def test_bad_config_json_in_a_model_folder_is_one_line(env: Path, model_root: Path) -> None:
    shutil.copytree(model_root / "tiny", env / "m")
    (env / "m" / "config.json").write_text('{"ch": 32, "num_res_blocks": 100000}')
    assert_one_error(wetok("compress", "a.png", "-m", str(env / "m")), 2, "num_res_blocks")


# -- 10. user errors are one line naming the file or option, exit 2 for bad options --------------------------
@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ('steps="many"', "steps"),
        ("steps=0", "steps"),
        ("checkpoint_every=0", "checkpoint_every"),
        ('device="tpu"', "device"),
        ('export_dtype="float8"', "export_dtype"),
        ("lr=-1", "lr"),
        ('model.ch="32"', "ch"),
    ],
)
def test_bad_training_values_refused_before_training(tmp_path: Path, data: Path, setting: str, fragment: str):
    result = train_cli(data, tmp_path / "run", "-s", setting)
    assert result.exit_code == 2, result.output
    assert fragment in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_truncated_image_is_a_user_error(env: Path) -> None:
    make_image(env / "big.png", size=(200, 200))
    (env / "cut.png").write_bytes((env / "big.png").read_bytes()[:300])
    assert_one_error(wetok("compress", "cut.png", "-m", "tiny"), 1, "cut.png", "truncated")


def test_huge_seed_is_a_usage_error(env: Path) -> None:
    assert wetok("compress", "a.png", "-m", "tiny").exit_code == 0
    result = wetok("decompress", "a.wtk", "-o", "x.png", "--seed", str(10**23))
    assert result.exit_code == 2 and "--seed" in result.output and "internal" not in result.output


def test_closed_stdin_and_stdout_are_user_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from wetok import fileio
    from wetok.errors import OutputError
    from wetok_cli import common, inputs

    closed = io.TextIOWrapper(io.BytesIO())
    closed.close()
    monkeypatch.setattr(inputs.sys, "stdin", closed)
    with pytest.raises(common.InputError, match="stdin is closed"):
        inputs.read_wtk_input(inputs.Input(inputs.STDIO, Path("stdin")))
    monkeypatch.setattr(fileio.sys, "stdout", closed)
    with pytest.raises(OutputError, match="stdout is closed"):
        fileio.write_output("/dev/stdout", b"data")
    assert common.user_message(OutputError("stdout is closed")) == "stdout is closed"


# -- 11. values that would write nonsense -----------------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_noise_scale_must_be_finite(env: Path, value: str) -> None:
    assert wetok("compress", "a.png", "-m", "tiny").exit_code == 0
    result = wetok("decompress", "a.wtk", "-o", "x.png", "--noise-scale", value)
    assert result.exit_code == 2 and "--noise-scale" in result.output
    assert not (env / "x.png").exists()


def test_format_and_suffix_must_agree(env: Path) -> None:
    assert wetok("compress", "a.png", "-m", "tiny").exit_code == 0
    result = wetok("decompress", "a.wtk", "--format", "jpg", "-o", "x.png")
    assert result.exit_code == 2 and "--format jpg" in result.output and not (env / "x.png").exists()
    assert wetok("decompress", "a.wtk", "--format", "jpg", "-o", "x.jpeg").exit_code == 0
    assert (env / "x.jpeg").read_bytes()[:2] == b"\xff\xd8"
    assert wetok("decompress", "a.wtk", "-o", "y.webp").exit_code == 0
    assert (env / "y.webp").read_bytes()[8:12] == b"WEBP"


# -- 13. eval names an unreadable image and goes on; a 1x1 image has no SSIM, not a crash -------------------
def test_eval_leaves_out_unreadable_images_and_scores_tiny_ones(env: Path) -> None:
    images = env / "set"
    images.mkdir()
    make_image(images / "good.png", size=(24, 20))
    Image.new("RGB", (1, 1), (9, 99, 199)).save(images / "dot.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    args = [str(images), "--no-model", "--codecs", "jpeg", "--settings", "jpeg=50", "--no-fid"]
    result = wetok(
        "eval", *args, "--perceptual", "none", "--crops", "0", "--no-cache", "-o", "report", "--json"
    )
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.stderr and "left out" in result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == ["dot.png", "good.png"]


# == round 2 (issue 22): concurrency, globs, pages, token datasets, weights ==================================
# -- 1. two runs writing one new output: exactly one wins --------------------------------------------------
def test_two_runs_cannot_both_create_one_output(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other run creates ``same.wtk`` after this one checked it, before this one names its file."""
    from wetok import fileio

    real = fileio.os.fsync

    def other_run_finishes_first(fd: int) -> None:
        real(fd)
        if not (env / "same.wtk").exists():
            (env / "same.wtk").write_bytes(b"the other run's file")

    monkeypatch.setattr(fileio.os, "fsync", other_run_finishes_first)
    result = wetok("compress", "a.png", "-m", "tiny", "-o", "same.wtk")
    assert_one_error(result, 1, "same.wtk already exists", "--force")
    assert (env / "same.wtk").read_bytes() == b"the other run's file"
    assert not list(env.glob(".*.part"))


# -- 2, 3. globs: no endless walk through link loops, no way out of -o DIR ----------------------------------
def test_double_star_glob_does_not_follow_link_loops(env: Path) -> None:
    from wetok_cli.inputs import expand_inputs

    (env / "d" / "s").mkdir(parents=True)
    assert wetok("compress", "a.png", "-m", "tiny", "-o", "d/x.wtk").exit_code == 0
    assert wetok("compress", "a.png", "-m", "tiny", "-o", "d/s/y.wtk").exit_code == 0
    (env / "d" / "up").symlink_to("..")  # one loop: Python's glob made 81 inputs of these 2 files
    inputs, problems = expand_inputs(["d/**/*.wtk"], [".wtk"])
    assert sorted(str(i.path) for i in inputs) == ["d/s/y.wtk", "d/x.wtk"] and not problems
    (env / "d" / "s" / "up").symlink_to("..")  # two loops: Python's glob never ended
    result = wetok("info", "d/**/*.wtk", "--json")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2, result.output


def test_dotdot_in_a_glob_does_not_leave_the_output_folder(env: Path) -> None:
    (env / "in" / "sub").mkdir(parents=True)
    shutil.copy(env / "a.png", env / "in" / "a.png")
    result = wetok("compress", "in/*/../../in/*.png", "-m", "tiny", "-o", "out/")
    assert result.exit_code == 0, result.output
    assert (env / "out" / "a.wtk").is_file() and not (env / "in" / "a.wtk").exists()


# -- 4, 5. files a command reads are never outputs; the image and its page are two files ---------------------
def test_compare_and_reference_files_are_never_outputs(env: Path) -> None:
    assert wetok("compress", "a.png", "-m", "tiny").exit_code == 0
    original = (env / "a.png").read_bytes()
    for args in (["--compare", "a.png"], ["-r", "a.png"], ["-r", "a.png", "-o", "a.png"]):
        result = wetok("decompress", "a.wtk", *args, "--force")
        assert_one_error(result, 1, "a.png", "input file itself")
        assert (env / "a.png").read_bytes() == original, args
    assert not (env / "a.html").exists()


def test_compare_page_never_replaces_the_image(env: Path) -> None:
    assert wetok("compress", "a.png", "-m", "tiny").exit_code == 0
    for force in ([], ["--force"]):
        result = wetok("decompress", "a.wtk", "-o", "out.html", "--compare", "a.png", *force)
        assert_one_error(result, 2, "-o out.html", "--compare")
        assert not (env / "out.html").exists()
    (env / "c.html").write_text("keep me")
    result = wetok("decompress", "a.wtk", "-o", "c.png", "--compare", "a.png")
    assert_one_error(result, 1, "c.html already exists")
    assert not (env / "c.png").exists() and (env / "c.html").read_text() == "keep me"  # checked first


# -- 6, 8. eval: report files atomic, links replaced not followed; undecodable names -------------------------
def _eval(*args: str) -> Result:
    common = ["--no-model", "--codecs", "jpeg", "--settings", "jpeg=50", "--no-fid", "--perceptual", "none"]
    return wetok("eval", *args, *common, "--crops", "0", "--no-cache")


def test_eval_report_is_written_atomically(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    real_bytes, real_text = Path.write_bytes, Path.write_text

    def disk_full(self: Path, data: object, *args: object, **kwargs: object) -> int:
        (real_bytes if isinstance(data, bytes) else real_text)(self, data[:0])  # type: ignore[index]
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as full:
        full.setattr(Path, "write_bytes", disk_full)
        full.setattr(Path, "write_text", disk_full)
        result = _eval("a.png", "-o", "ev")
    assert result.exit_code == 1 and "No space left" in result.output
    assert not (env / "ev" / "eval.json").exists() and not list((env / "ev").glob(".*.part"))
    assert _eval("a.png", "-o", "ev").exit_code == 0  # no empty eval.json stands in the way


def test_eval_report_never_writes_through_a_planted_link(env: Path) -> None:
    (env / "ev").mkdir()
    (env / "precious").write_text("keep me")
    (env / "ev" / "eval.json").symlink_to(env / "precious")
    assert_one_error(_eval("a.png", "-o", "ev"), 1, "eval.json already exists")
    (env / "ev" / "gone.json").symlink_to(env / "nowhere")
    os.replace(env / "ev" / "gone.json", env / "ev" / "eval.json")  # a link to nothing: still exists
    assert_one_error(_eval("a.png", "-o", "ev", "--force"), 1, "symbolic link to nothing")
    (env / "ev" / "eval.json").unlink()
    (env / "ev" / "eval.json").symlink_to(env / "precious")
    assert _eval("a.png", "-o", "ev", "--force").exit_code == 0
    assert (env / "precious").read_text() == "keep me" and not (env / "ev" / "eval.json").is_symlink()
    assert not (env / "nowhere").exists()


def test_eval_html_with_an_undecodable_file_name(env: Path) -> None:
    name = os.fsdecode(b"\xff\xfe.png")
    shutil.copy(env / "a.png", env / name)
    args = ["--codecs", "none", "--no-fid", "--perceptual", "none", "--crops", "0", "--no-cache"]
    result = wetok("eval", name, "-m", "tiny", *args, "--html", "-o", "ev")
    assert result.exit_code == 0, result.output
    page = (env / "ev" / "report.html").read_text(encoding="utf-8")
    assert "\ufffd\ufffd.png" in page


# -- 7. a closed stdout is a failure, not a silent success --------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["info", "a.wtk"],
        ["info", "a.wtk", "--json"],
        ["compress", "b.png", "-m", "tiny", "-o", "b.wtk", "--json"],
        ["models", "--json"],
    ],
)
def test_closed_stdout_fails(env: Path, model_root: Path, args: list[str]) -> None:
    import shlex
    import subprocess
    import sys

    assert wetok("compress", "a.png", "-m", "tiny").exit_code == 0
    command = " ".join(map(shlex.quote, [sys.executable, "-m", "wetok_cli.main", *args])) + " >&-"
    env_vars = {**os.environ, "WETOK_MODELS": str(model_root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "-c", command], cwd=env, env=env_vars, capture_output=True, timeout=120)
    assert done.returncode == 1, done.stderr.decode()
    assert "stdout is closed" in done.stderr.decode() and "Traceback" not in done.stderr.decode()


def test_closed_stdout_is_an_output_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from wetok import fileio
    from wetok.errors import OutputError

    monkeypatch.setattr(fileio.sys, "stdout", None)  # what Python makes of a closed descriptor 1
    with pytest.raises(OutputError, match="stdout is closed"):
        fileio.write_stdout_text("{}")


# -- 9. pages: the template is filled once; a bad fragment does not stop the sliders -------------------------
def test_page_template_is_filled_once(tmp_path: Path) -> None:
    from wetok.eval.html import Page, write_page

    write_page(Page(title="{body} and {js} {title}"), tmp_path / "p.html", embed=True)
    page = (tmp_path / "p.html").read_text()
    assert "<title>{body} and {js} {title}</title>" in page and page.count("<script>") == 1


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's script")
@pytest.mark.parametrize("fragment", ["#split=%", "#split=%E0%A4%A", "#split=abc&zoom=x", "#zoom=%"])
def test_page_script_survives_a_bad_fragment(fragment: str) -> None:
    import subprocess

    from wetok.eval.html import _JS

    stub = (
        f"var location = {{hash: {json.dumps(fragment)}}}, devicePixelRatio = 1;"
        "var document = {documentElement: {dataset: {}}, querySelectorAll: function () { return []; }};"
    )
    script = stub + _JS + "console.log(document.documentElement.dataset.ready);"
    done = subprocess.run(["node", "-e", script], capture_output=True, timeout=30)
    assert done.stdout.decode().strip() == "1", done.stderr.decode()


# -- 10, 11, 12. token datasets: index.json and shards are checked, the grid is bounded ----------------------
@pytest.fixture(params=["16", "none"])
def dataset(env: Path, request: pytest.FixtureRequest) -> Path:
    args = ["tokenize", "a.png", "b.png", "-o", "tok", "-m", "tiny", "--workers", "0", "--device", "cpu"]
    result = wetok(*args, "--size", request.param)
    assert result.exit_code == 0, result.output
    return env / "tok"


def _edit_index(dataset: Path, change: object) -> None:
    index = json.loads((dataset / "index.json").read_text())
    change(index)
    (dataset / "index.json").write_text(json.dumps(index))


def _set(path: str, value: object) -> object:
    def change(index: dict) -> None:
        *parents, last = path.split(".")
        node = index
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return change


def _drop(key: str) -> object:
    return lambda index: index.pop(key)


HOSTILE_INDEXES = {
    "wrong tokens grid": _set("token_grid", [4, 4, 9]),
    "no shards": _drop("shards"),
    "no items": _drop("items"),
    "no model": _drop("model"),
    "non-hex model id": _set("model.model_id", "zzzzzzzzzzzz"),
    "items a string": _set("items", "abc"),
    "item without width": _set("items.0", {"source": "a.png"}),
    "negative item count": _set("shards.0.items", -1),
    "item count a string": _set("shards.0.items", "2"),
    "no checksum": _set("shards.0.payload_sha256", None),
    "shards a dict": _set("shards", {}),
    "group bits a string": _set("group_bits", "8"),
    "zero downsample": _set("downsample", 0),
    "negative size": _set("preprocess.size", -64),
    "size a string": _set("preprocess.size", "64"),
    "dtype float": _set("dtype", "float32"),
    "run id a number": _set("run", 7),
    "absolute shard": _set("shards.0.file", "/dev/zero"),
    "shard outside": _set("shards.0.file", "../../other/shard-00000.safetensors"),
    "shard a folder": _set("shards.0.file", "."),
}


@pytest.mark.parametrize("case", list(HOSTILE_INDEXES))
def test_token_dataset_refuses_a_hostile_index(dataset: Path, case: str) -> None:
    from wetok.data import TokenDataset
    from wetok.errors import ShardError

    _edit_index(dataset, HOSTILE_INDEXES[case])
    with pytest.raises(ShardError, match="index.json"):
        ds = TokenDataset(dataset)
        ds[0]


def _shard_with(dataset: Path, edit: object) -> None:
    """Rewrite shard 0 with edited tensors, index and header checksums kept consistent (a crafted shard)."""
    from wetok import shards

    path = dataset / "shard-00000.safetensors"
    tensors, meta = shards.read_shard(path)
    tensors = edit(dict(tensors))
    shards.write_shard(path, tensors, {k: v for k, v in meta.items() if k != "payload_sha256"})
    sha = shards.read_shard_meta(path)["payload_sha256"]
    _edit_index(dataset, _set("shards.0.payload_sha256", sha))


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: {**t, "tokens": t["tokens"].astype(np.float32) * 1e10},
        lambda t: {**t, "tokens": t["tokens"].astype(np.int32) - 1},
        lambda t: {**t, "tokens": np.full_like(t["tokens"], 255).astype(np.uint16) * 257},
        lambda t: {**t, "tokens": np.concatenate([t["tokens"]] * 2, axis=-1)},  # twice the groups
        lambda t: {**t, "tokens": np.zeros((2, 50, 50, t["tokens"].shape[-1]), np.uint8)},
        lambda t: {**t, "tokens": np.full_like(t["tokens"], 200)},  # 200 >= 2^4 for the tiny model
        lambda t: {**t, "extra": np.zeros(3, np.uint8)},
    ],
    ids=["float", "negative", "uint16", "groups", "grid", "range", "extra"],
)
def test_token_dataset_checks_shard_contents(dataset: Path, edit: object) -> None:
    from wetok.data import TokenDataset
    from wetok.errors import ShardError

    _shard_with(dataset, edit)
    with pytest.raises(ShardError, match="shard-00000"):
        TokenDataset(dataset)[0]


def test_token_dataset_refuses_devices_and_oversized_shards(dataset: Path) -> None:
    from wetok.data import TokenDataset
    from wetok.errors import ShardError

    shard = dataset / "shard-00000.safetensors"
    shard.unlink()
    shard.symlink_to("/dev/zero")
    with pytest.raises(ShardError, match="outside the dataset folder|not a regular file"):
        TokenDataset(dataset)[0]
    shard.unlink()
    shard.write_bytes(bytes(200 << 20))
    with pytest.raises(ShardError, match="over the"):
        TokenDataset(dataset)[0]


def test_detokenize_with_a_negative_size_is_one_line(dataset: Path, env: Path) -> None:
    _edit_index(dataset, _set("preprocess.size", -64))
    assert_one_error(wetok("detokenize", "tok", "-o", "g.png"), 1, "preprocess.size")
    assert not (env / "g.png").exists()


def test_detokenize_columns_are_bounded(dataset: Path, env: Path) -> None:
    result = wetok("detokenize", "tok", "--items", "0:1", "--columns", "100000", "-o", "g.png")
    assert result.exit_code == 0, result.output
    one = wetok("detokenize", "tok", "--items", "0:1", "-o", "h.png")
    assert Image.open(env / "g.png").size == Image.open(env / "h.png").size  # one item, one column
    result = wetok("--max-pixels", "100", "detokenize", "tok", "--items", "0:2", "-o", "i.png")
    assert_one_error(result, 2, "grid image", "above the limit")
    assert one.exit_code == 0 and not (env / "i.png").exists()


# -- 13, 14. model weights: dtype, values, names and shapes checked, one line, exit 2 ------------------------
def _model_with(env: Path, model_root: Path, edit: object = None, config: object = None) -> Path:
    from safetensors.torch import load_file, save_file

    folder = env / "m"
    shutil.copytree(model_root / "tiny", folder)
    (folder / "model_id.json").unlink(missing_ok=True)
    if edit is not None:
        save_file(edit(load_file(str(folder / "model.safetensors"))), str(folder / "model.safetensors"))
    if config is not None:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config(cfg)))
    return folder


def _first(state: dict) -> str:
    return sorted(state)[0]


WEIGHT_EDITS = {
    "nan": (lambda s: {**s, _first(s): s[_first(s)] * float("nan")}, "NaN"),
    "inf": (lambda s: {**s, _first(s): s[_first(s)] + float("inf")}, "NaN or infinite"),
    "int8": (lambda s: {**s, _first(s): s[_first(s)].to(torch.int8)}, "I8"),
    "float64": (lambda s: {**s, _first(s): s[_first(s)].double()}, "F64"),
    "shape": (lambda s: {**s, _first(s): torch.zeros(3)}, "shape"),
    "missing": (lambda s: {k: v for k, v in s.items() if k != _first(s)}, "lacks"),
    "extra": (lambda s: {**s, "evil.weight": torch.zeros(2)}, "evil.weight"),
}


@pytest.mark.parametrize("case", list(WEIGHT_EDITS))
def test_bad_weights_are_one_line_exit_2(env: Path, model_root: Path, case: str) -> None:
    edit, fragment = WEIGHT_EDITS[case]
    folder = _model_with(env, model_root, edit)
    assert_one_error(wetok("compress", "a.png", "-m", str(folder)), 2, "model.safetensors", fragment)
    assert not (env / "a.wtk").exists()


@pytest.mark.parametrize(
    ("change", "fragment"),
    [({"groups": 1000}, "model"), ({"in_channels": 4}, "model.safetensors")],
)
def test_config_that_does_not_fit_the_weights(
    env: Path, model_root: Path, change: dict, fragment: str
) -> None:
    folder = _model_with(env, model_root, config=lambda cfg: {**cfg, **change})
    assert_one_error(wetok("compress", "a.png", "-m", str(folder)), 2, fragment)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"", "not a safetensors file"), ((1 << 60).to_bytes(8, "little") + b"{}", "header length")],
    ids=["empty", "huge-header"],
)
def test_broken_safetensors_is_one_line(env: Path, model_root: Path, content: bytes, fragment: str) -> None:
    folder = _model_with(env, model_root)
    (folder / "model.safetensors").write_bytes(content)
    assert_one_error(wetok("compress", "a.png", "-m", str(folder)), 2, "model.safetensors", fragment)


def test_deeply_nested_config_is_one_line(env: Path, model_root: Path) -> None:
    folder = _model_with(env, model_root)
    (folder / "config.json").write_text("[" * 100000 + "]" * 100000)
    assert_one_error(wetok("compress", "a.png", "-m", str(folder)), 2, "config.json", "nested too deeply")


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"), ({"WORLD_SIZE": "2"}, "torchrun")],
)
def test_bad_world_size_is_a_usage_error(
    env: Path, monkeypatch: pytest.MonkeyPatch, variables: dict, fragment: str
) -> None:
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    result = wetok("tokenize", "a.png", "-o", "tok", "-m", "tiny", "--workers", "0", "--device", "cpu")
    assert_one_error(result, 2, fragment)
    result = wetok("train", "-s", 'model="tiny"', "--data", ".", "--out", "run")
    assert_one_error(result, 2, fragment)


# -- hashing: a model's id is computed streaming, not from the whole file in memory --------------------------
def test_model_id_is_hashed_streaming(env: Path, model_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import safetensors.torch

    from wetok import modeldir
    from wetok.codec import Codec

    folder = _model_with(
        env, model_root, lambda s: {k: v.half() if i % 2 else v for i, (k, v) in enumerate(s.items())}
    )
    expected = Codec.from_pretrained(folder).model_id
    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("loaded every weight"))
    monkeypatch.setattr(modeldir, "_CHUNK", 7)  # many chunks per tensor
    assert modeldir.hash_model_id(folder) == expected
