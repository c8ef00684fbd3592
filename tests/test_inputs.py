"""The rules for what a command reads (wetok_cli/inputs.py); the attack cases are in test_hostile.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from wetok_cli.inputs import Input, expand_inputs, relative_name


def test_relative_names_never_hold_dotdot() -> None:
    assert relative_name(Path("in/x/../../in/a.png"), Path("in")) == Path("a.png")
    assert relative_name(Path("in/x/../../other/a.png"), Path("in")) == Path("a.png")
    assert relative_name(Path("in/sub/a.png"), Path("in")) == Path("sub/a.png")
    assert relative_name(Path("../up/a.png"), Path(".")) == Path("a.png")


def test_globs_folders_and_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d" / "s").mkdir(parents=True)
    for name in ("d/a.png", "d/s/b.png", "d/s/c.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "d" / "s" / "loop").symlink_to("..")
    inputs, problems = expand_inputs(["d/**/*.png", "d", "-", "nothing*.png"], [".png"])
    assert [(str(i.path), str(i.rel)) for i in inputs] == [
        ("d/a.png", "a.png"),
        ("d/s/b.png", "s/b.png"),
        ("d/a.png", "a.png"),
        ("d/s/b.png", "s/b.png"),
        ("-", "stdin"),
    ]
    assert problems == [("nothing*.png", "no files match this pattern")]
    assert Input(Path("-"), Path("stdin")).display == "<stdin>"
