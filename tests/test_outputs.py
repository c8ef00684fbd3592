"""The rules for what a command may write (wetok_cli/outputs.py, wetok/fileio.py); the attack cases are in
test_hostile.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from wetok import fileio
from wetok.errors import OutputError
from wetok_cli.common import InputError, UsageProblem
from wetok_cli.inputs import Input
from wetok_cli.outputs import Claims, output_paths


def test_exclusive_writes_have_exactly_one_winner(tmp_path: Path) -> None:
    target, errors, barrier = tmp_path / "same.wtk", [], threading.Barrier(8)

    def write(k: int) -> None:
        barrier.wait()
        try:
            fileio.write_atomic(target, f"run {k}", exclusive=True)
        except OutputError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 7 and all("already exists" in e for e in errors)
    assert target.read_text().startswith("run ") and [p.name for p in tmp_path.iterdir()] == ["same.wtk"]


def test_exclusive_write_without_hard_links_still_refuses(tmp_path: Path, monkeypatch) -> None:
    import errno

    def no_links(*_: object, **__: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(fileio.os, "link", no_links)
    fileio.write_atomic(tmp_path / "a", "first", exclusive=True)
    with pytest.raises(OutputError, match="already exists"):
        fileio.write_atomic(tmp_path / "a", "second", exclusive=True)
    assert (tmp_path / "a").read_text() == "first" and len(list(tmp_path.iterdir())) == 1


def test_interrupted_write_without_hard_links_gives_the_name_back(tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C between reserving the name (O_EXCL) and the rename must not leave an empty file that the next
    run refuses as existing."""
    import errno

    def no_links(*_: object, **__: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "link", no_links)
    with monkeypatch.context() as m:
        m.setattr(fileio.os, "replace", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fileio.write_atomic(tmp_path / "a", "first", exclusive=True)
    assert list(tmp_path.iterdir()) == []
    fileio.write_atomic(tmp_path / "a", "again", exclusive=True)
    assert (tmp_path / "a").read_text() == "again"


@pytest.mark.parametrize("name", ["n" * 241, "n" * 255, "é" * 127 + "x", "\udcff" * 255])
def test_names_up_to_the_longest_the_file_system_allows_can_be_written(tmp_path: Path, name: str) -> None:
    """The temporary ``.NAME.XXXXXXXX.part`` is 15 bytes longer than NAME: cut, so any valid name works."""
    fileio.write_atomic(tmp_path / name, "data", exclusive=True)
    fileio.write_atomic(tmp_path / name, "more", exclusive=False)
    assert [p.name for p in tmp_path.iterdir()] == [name] and (tmp_path / name).read_text() == "more"


def test_output_folder_layout_never_leaves_the_folder(tmp_path: Path) -> None:
    inputs = [Input(Path("in/a.png"), Path("a.png")), Input(Path("in/s/b.png"), Path("s/b.png"))]
    assert output_paths(inputs, str(tmp_path / "out"), ".wtk") == [
        tmp_path / "out" / "a.wtk",
        tmp_path / "out" / "s" / "b.wtk",
    ]
    with pytest.raises(UsageProblem, match="outside -o"):
        output_paths([Input(Path("x/../../a.png"), Path("../a.png"))], str(tmp_path) + "/", ".wtk")


def test_claims_refuse_inputs_duplicates_and_read_files(tmp_path: Path) -> None:
    (tmp_path / "in.png").write_bytes(b"x")
    (tmp_path / "ref.png").write_bytes(b"r")
    claims = Claims([Input(tmp_path / "in.png", Path("in.png"))])
    with pytest.raises(OutputError, match="input file itself"):
        claims.claim([tmp_path / "in.png"], force=True)
    with pytest.raises(OutputError, match="input file itself"):
        claims.claim([tmp_path / "ref.png"], force=True, reads=[tmp_path / "ref.png"])
    with pytest.raises(InputError, match="written twice"):
        claims.claim([tmp_path / "o.html", tmp_path / "o.html"], force=False)
    claims.claim([tmp_path / "o.png", tmp_path / "o.html"], force=False)
    with pytest.raises(InputError, match="already written by another input"):
        claims.claim([tmp_path / "o.png"], force=True)


def test_a_link_planted_as_a_folder_below_the_output_folder_is_refused(tmp_path: Path) -> None:
    """``-o out/`` with inputs ``photos/sub/q.png``: ``out/sub`` a link to another folder would carry the
    output there. The output folder itself may be a link (the user named it)."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").symlink_to(tmp_path / "elsewhere")
    inputs = [Input(Path("photos/sub/q.png"), Path("sub/q.png"))]
    with pytest.raises(UsageProblem, match="sub is a symbolic link"):
        output_paths(inputs, str(tmp_path / "out"), ".wtk")
    assert output_paths(inputs, str(tmp_path / "out" / "sub"), ".wtk")[0].parent.name == "sub"
