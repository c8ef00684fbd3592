"""The installed ``wetok`` command in real shell pipelines: bytes through pipes, exit codes, stderr.

Uses the console script beside the running interpreter (``pip install .`` puts it there), else
``python -m wetok_cli.main``. Each process imports torch, so these take seconds, not milliseconds.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import tiny_model
from wetok.codec import Codec
from wetok.prior import Prior

_SCRIPT = Path(sys.executable).with_name("wetok")
WETOK = shlex.quote(str(_SCRIPT)) if _SCRIPT.is_file() else f"{shlex.quote(sys.executable)} -m wetok_cli.main"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``models/tiny`` and a 40×28 photo-like ``a.png``."""
    root = tmp_path_factory.mktemp("pipeline")
    model = tiny_model(0)
    model.save_pretrained(root / "models" / "tiny")
    Prior.uniform(model.config.groups, model.config.group_bits).save(root / "models" / "tiny")
    yy, xx = np.mgrid[0:28, 0:40] / 40
    rgb = np.stack([xx, yy, 0.5 + 0.5 * np.sin(8 * xx * yy)], -1)
    Image.fromarray((rgb / rgb.max() * 255).astype(np.uint8)).save(root / "a.png")
    return root


def sh(command: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` in bash with ``pipefail`` and only the temporary model registry."""
    env = {**os.environ, "WETOK_MODELS": str(cwd / "models"), "XDG_DATA_HOME": str(cwd / "xdg")}
    env.pop("WETOK_DEBUG", None)
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True, timeout=300
    )


def test_cat_compress_decompress_pipeline(workdir: Path) -> None:
    done = sh(f"cat a.png | {WETOK} compress -m tiny - | {WETOK} decompress - > b.png", workdir)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b""
    assert b"Traceback" not in done.stderr and len(done.stderr.decode().splitlines()) == 2  # one per command
    codec = Codec.from_pretrained(workdir / "models" / "tiny")
    expected = np.asarray(codec.decompress(codec.compress(Image.open(workdir / "a.png"))).image)
    assert np.array_equal(np.asarray(Image.open(workdir / "b.png")), expected)


@pytest.mark.slow
def test_error_paths_in_a_real_process(workdir: Path) -> None:
    (workdir / "bad.wtk").write_bytes(b"\x89W\x01 truncated")
    cases = [
        (f"{WETOK} decompress bad.wtk", 1, "bad.wtk: "),
        (f"{WETOK} compress missing.png -m tiny", 1, "missing.png: No such file"),
        (f"{WETOK} compress a.png -m nosuch", 2, "no model named 'nosuch'"),
        (f"{WETOK} compress a.png -m tiny -o - --json", 2, "--json"),
        (f"{WETOK} info bad.wtk", 1, "bad.wtk: "),
    ]
    for command, code, fragment in cases:
        done = sh(command, workdir)
        err = done.stderr.decode()
        assert done.returncode == code, (command, err)
        assert len(err.strip().splitlines()) == 1 and fragment in err, (command, err)
        assert "Traceback" not in err
        assert done.stdout == b""


@pytest.mark.slow
def test_version_and_broken_pipe(workdir: Path) -> None:
    done = sh(f"{WETOK} --version", workdir)
    assert done.returncode == 0 and b"wetok " in done.stdout and b"torch " in done.stdout
    done = sh(f"{WETOK} compress --quiet -m tiny -o - a.png | head -c 2", workdir)
    assert done.stdout == b"\x89W" and b"Traceback" not in done.stderr
