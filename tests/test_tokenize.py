"""``wetok tokenize`` / ``detokenize`` and :class:`wetok.data.TokenDataset`: round trips against
``Codec.encode_tokens``, resume after a kill, the torchrun split (2 gloo processes), bad input."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from click.testing import CliRunner
from PIL import Image

from tests.conftest import no_hang, tiny_model
from wetok import fileio, shards
from wetok.codec import Codec
from wetok.data import TokenDataset
from wetok.errors import ShardError
from wetok.image import open_image
from wetok.prior import Prior
from wetok.shards import token_dtype
from wetok.tokenize_images import Preprocess, TokenizeOptions, tokenize_images
from wetok_cli.main import cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    model = tiny_model(0)
    model.save_pretrained(path)
    Prior.uniform(model.config.groups, model.config.group_bits).save(path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Seven smooth random images of different sizes and aspect ratios (and one grayscale)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(40, 56), (37, 29), (64, 64), (21, 50), (48, 33), (30, 30), (52, 44)]):
        small = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
        img = img.convert("L") if i == 3 else img
        paths.append(root / f"im{i}.png")
        img.save(paths[-1])
    return paths


def _run(args: list[str], model_dir: Path) -> object:
    result = CliRunner().invoke(cli, [*args], env={"WETOK_MODELS": str(model_dir.parent)})
    return result


@pytest.mark.parametrize(
    ("size", "crop", "workers"), [("32", "center", 0), ("24", "none", 2), ("none", "center", 0)]
)
def test_tokens_round_trip_through_dataset(
    tmp_path: Path, model_dir: Path, images: list[Path], size: str, crop: str, workers: int
) -> None:
    out = tmp_path / "tok"
    result = _run(
        [
            "tokenize",
            *map(str, images),
            "-o",
            str(out),
            "-m",
            str(model_dir),
            "--size",
            size,
            "--crop",
            crop,
            "--shard-size",
            "3",
            "--batch-size",
            "2",
            "--workers",
            str(workers),
            "--device",
            "cpu",
        ],
        model_dir,
    )
    assert result.exit_code == 0, result.output
    codec = Codec.from_pretrained(model_dir)
    prep = Preprocess(None if size == "none" else int(size), crop)
    ds = TokenDataset(out)
    assert len(ds) == len(images) and len(ds.index["shards"]) == 3
    assert ds.index["dtype"] == "uint8" and ds.index["model"]["model_id"] == codec.model_id_hex
    for i, path in enumerate(images):
        expected, _ = codec.encode_tokens(prep(open_image(path)))
        assert torch.equal(ds[i], expected[0]), f"item {i} ({path.name})"
        h, w = open_image(path).shape[:2]
        assert (ds.items[i]["source"], ds.items[i]["height"], ds.items[i]["width"]) == (str(path), h, w)
    if size != "none":
        side = int(size) // codec.model.config.downsample
        assert shards.read_shard(out / "shard-00000.safetensors")[0]["tokens"].shape == (3, side, side, 2)


def test_narrowest_dtype() -> None:
    assert [token_dtype(b) for b in (1, 8, 9, 16, 17)] == [np.uint8, np.uint8, np.uint16, np.uint16, np.int32]


def test_resume_after_kill_gives_identical_shards(
    tmp_path: Path, model_dir: Path, images: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = Codec.from_pretrained(model_dir)
    sources = [str(p) for p in images]
    options = TokenizeOptions(Preprocess(32), shard_size=2, batch_size=2)
    tokenize_images(codec, sources, tmp_path / "clean", options)

    real_write, calls = fileio.write_atomic, []

    def killed_on_second_shard(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 3:  # run.json, shard 0, then a kill while shard 1 is being written
            (path.parent / f".{path.name}.xyz.part").write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(fileio, "write_atomic", killed_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        tokenize_images(codec, sources, tmp_path / "resumed", options)
    monkeypatch.setattr(fileio, "write_atomic", real_write)
    assert sorted(p.name for p in (tmp_path / "resumed").glob("shard-*")) == ["shard-00000.safetensors"]
    mtime = (tmp_path / "resumed" / "shard-00000.safetensors").stat().st_mtime_ns
    tokenize_images(codec, sources, tmp_path / "resumed", options)

    clean = sorted((tmp_path / "clean").glob("shard-*"))
    assert len(clean) == 4
    for path in clean:
        assert (tmp_path / "resumed" / path.name).read_bytes() == path.read_bytes()
    assert (tmp_path / "resumed" / "shard-00000.safetensors").stat().st_mtime_ns == mtime  # kept, not redone
    assert not list((tmp_path / "resumed").glob(".*.part"))


def test_other_settings_into_same_folder_are_refused(
    tmp_path: Path, model_dir: Path, images: list[Path]
) -> None:
    args = [
        "tokenize",
        str(images[0]),
        str(images[1]),
        "-o",
        str(tmp_path / "t"),
        "-m",
        str(model_dir),
        "--workers",
        "0",
        "--device",
        "cpu",
        "--size",
    ]
    assert _run([*args, "32"], model_dir).exit_code == 0
    again = _run([*args, "32"], model_dir)
    assert again.exit_code == 0, again.output
    other = _run([*args, "48"], model_dir)
    assert other.exit_code == 1
    assert "other settings (preprocess differ)" in other.output
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    busy = _run([*args[:4], str(tmp_path / "busy"), *args[5:], "32"], model_dir)
    assert busy.exit_code == 1 and "is not empty and holds no `wetok tokenize` run" in busy.output


def test_unreadable_images_are_listed_or_fatal_with_strict(
    tmp_path: Path, model_dir: Path, images: list[Path]
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{images[0]}\nbroken.png\n# a comment\n{images[1]}\n")
    out = tmp_path / "t"
    result = _run(
        [
            "tokenize",
            str(listing),
            "-o",
            str(out),
            "-m",
            str(model_dir),
            "--workers",
            "0",
            "--size",
            "16",
            "--device",
            "cpu",
        ],
        model_dir,
    )
    assert result.exit_code == 0, result.output
    assert "1 images could not be read" in result.output
    ds = TokenDataset(out)
    assert [it["source"] for it in ds.items] == [str(images[0]), str(images[1])]
    assert ds.index["skipped"] == [
        {"source": str(bad), "error": "not an image, or a format Pillow cannot read"}
    ]
    strict = _run(
        [
            "tokenize",
            str(listing),
            "-o",
            str(tmp_path / "s"),
            "-m",
            str(model_dir),
            "--workers",
            "0",
            "--strict",
            "--device",
            "cpu",
        ],
        model_dir,
    )
    assert strict.exit_code == 1 and f"{bad}: not an image" in strict.output


def test_damaged_shard_is_named(tmp_path: Path, model_dir: Path, images: list[Path]) -> None:
    codec = Codec.from_pretrained(model_dir)
    tokenize_images(codec, [str(p) for p in images], tmp_path, TokenizeOptions(Preprocess(16), shard_size=4))
    shard = tmp_path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    ds = TokenDataset(tmp_path)
    assert ds[0].shape == (*ds.token_grid[:2], 2)  # shard 0 is intact
    with pytest.raises(ShardError, match=f"token shard {shard} fails its checksum"):
        ds[5]
    shard.write_bytes(b"\x10")
    with pytest.raises(ShardError, match="shard-00001.safetensors is truncated"):
        TokenDataset(tmp_path, cache_shards=1)[6]


def test_detokenize_grid(tmp_path: Path, model_dir: Path, images: list[Path]) -> None:
    out = tmp_path / "t"
    assert (
        _run(
            [
                "tokenize",
                *map(str, images[:5]),
                "-o",
                str(out),
                "-m",
                str(model_dir),
                "--workers",
                "0",
                "--size",
                "16",
                "--device",
                "cpu",
            ],
            model_dir,
        ).exit_code
        == 0
    )
    result = _run(
        [
            "detokenize",
            str(out),
            "--items",
            "1:5",
            "-o",
            str(tmp_path / "g.png"),
            "--columns",
            "2",
            "--device",
            "cpu",
        ],
        model_dir,
    )
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "g.png").size == (2 * 16 + 2, 2 * 16 + 2)
    again = _run(["detokenize", str(out), "-o", str(tmp_path / "g.png")], model_dir)
    assert again.exit_code == 1 and "already exists" in again.output
    empty = _run(["detokenize", str(out), "--items", "9:12", "-o", str(tmp_path / "h.png")], model_dir)
    assert empty.exit_code == 1 and "selects nothing from 5 items" in empty.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(
    rank: int, world: int, port: int, model_dir: str, sources: list[str], out: str, size: int = 16
) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo")
    codec = Codec.from_pretrained(model_dir)
    try:
        index = tokenize_images(codec, sources, Path(out), TokenizeOptions(Preprocess(size), shard_size=2))
        assert (index is not None) == (rank == 0)
    except ShardError as e:  # every rank gets rank 0's refusal (none waits forever at a barrier)
        Path(f"{out}.refused.{rank}").write_text(str(e))
    dist.destroy_process_group()


def test_two_ranks_split_the_shards_and_write_one_index(
    tmp_path: Path, model_dir: Path, images: list[Path]
) -> None:
    sources = [str(p) for p in images]
    mp.spawn(
        _rank_worker,
        args=(2, _free_port(), str(model_dir), sources, str(tmp_path / "ddp")),
        nprocs=2,
        join=True,
    )
    tokenize_images(
        Codec.from_pretrained(model_dir),
        sources,
        tmp_path / "one",
        TokenizeOptions(Preprocess(16), shard_size=2),
    )
    ddp, one = TokenDataset(tmp_path / "ddp"), TokenDataset(tmp_path / "one")
    assert len(ddp) == len(one) == len(images) and len(ddp.index["shards"]) == 4
    assert ddp.items == one.items
    for name in ("shard-00000.safetensors", "shard-00001.safetensors", "shard-00003.safetensors"):
        assert (tmp_path / "ddp" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    # The same two ranks into that folder with other settings: both refuse, with rank 0's message.
    mp.spawn(
        _rank_worker, args=(2, _free_port(), str(model_dir), sources, str(tmp_path / "ddp"), 24), nprocs=2
    )
    messages = {(tmp_path / f"ddp.refused.{r}").read_text() for r in (0, 1)}
    assert len(messages) == 1 and "other settings (preprocess differ)" in messages.pop()


# -- hostile datasets (issue 28): FIFOs, deep JSON, huge index files, detokenize's options ----------------
@pytest.fixture
def dataset(tmp_path: Path, model_dir: Path, images: list[Path]) -> Path:
    out = tmp_path / "tok"
    args = ["tokenize", *map(str, images[:2]), "-o", str(out), "-m", str(model_dir), "--workers", "0"]
    assert _run([*args, "--size", "16", "--device", "cpu"], model_dir).exit_code == 0
    return out


@pytest.mark.parametrize("name", ["index.json", "shard-00000.safetensors"])
def test_a_fifo_in_a_dataset_is_refused_not_waited_for(dataset: Path, name: str) -> None:
    os.unlink(dataset / name)
    os.mkfifo(dataset / name)
    with no_hang(), pytest.raises(ShardError, match=f"{name} is a FIFO"):
        TokenDataset(dataset)[0]
    if name != "index.json":
        with no_hang(), pytest.raises(ShardError, match="is a FIFO"):
            shards.read_shard_meta(dataset / name)


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_deeply_nested_json_in_a_dataset_is_one_error(dataset: Path) -> None:
    index = dataset / "index.json"
    good = index.read_text()
    index.write_text(_deep(100_000))
    with pytest.raises(ShardError, match="nested too deeply"):
        TokenDataset(dataset)
    index.write_text(good)
    shard = dataset / "shard-00000.safetensors"
    for deep in (f'{{"__metadata__": {{"wetok": "{_deep(100_000)}"}}}}', _deep(100_000)):
        header = deep.encode()
        shard.write_bytes(len(header).to_bytes(8, "little") + header)
        with pytest.raises(ShardError, match="no readable wetok header"):
            shards.read_shard_meta(shard)
        with pytest.raises(ShardError, match="no readable wetok header"):
            shards.read_shard(shard)


def test_index_size_is_checked_before_it_is_read(dataset: Path) -> None:
    import tracemalloc

    with open(dataset / "index.json", "r+b") as f:
        f.truncate(shards.MAX_INDEX_BYTES + 1)  # sparse: costs no disk, and must cost no memory
    tracemalloc.start()
    try:
        with pytest.raises(ShardError, match="index.json is .* bytes, over the"):
            TokenDataset(dataset)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def _detokenize(dataset: Path, model_dir: Path, *args: str) -> object:
    return _run(["detokenize", str(dataset), "-o", str(dataset.parent / "g.png"), *args], model_dir)


@pytest.mark.parametrize(
    ("args", "fragment"), [(["--seed", str(10**23)], "--seed"), (["--items", "0:16:0"], "step cannot be 0")]
)
def test_detokenize_options_out_of_range_are_usage_errors(
    dataset: Path, model_dir: Path, args: list[str], fragment: str
) -> None:
    result = _detokenize(dataset, model_dir, *args)
    assert result.exit_code == 2 and fragment in result.output and "internal" not in result.output


def test_detokenize_refuses_an_index_that_does_not_fit_its_model(
    dataset: Path, model_dir: Path, tmp_path: Path
) -> None:
    """An index (and shards, rewritten to agree) claiming 1 group for a 2-group model is named, not decoded
    into a shape error."""
    import json

    index = json.loads((dataset / "index.json").read_text())
    path = dataset / index["shards"][0]["file"]
    tensors, meta = shards.read_shard(path)
    one_group = np.ascontiguousarray(tensors["tokens"][..., :1])
    shards.write_shard(path, {"tokens": one_group}, {k: v for k, v in meta.items() if k != "payload_sha256"})
    index["groups"], index["token_grid"][-1] = 1, 1
    index["shards"][0]["payload_sha256"] = shards.read_shard_meta(path)["payload_sha256"]
    (dataset / "index.json").write_text(json.dumps(index))
    assert TokenDataset(dataset)[0].shape[-1] == 1  # consistent with itself
    result = _detokenize(dataset, model_dir)
    assert result.exit_code == 1 and "index.json does not fit the model" in result.output, result.output
    assert "groups 1 (the model: 2)" in result.output and not (tmp_path / "g.png").exists()


def test_images_at_their_own_size_get_the_tokens_of_their_wtk(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--size none``: equal-sized images are not batched through the dense pass (whose rounding can flip
    a latent's sign) but encoded as ``compress`` encodes them, so the tokens are the ``.wtk``'s."""
    from wetok.tokenize_images import encode_batch

    codec = Codec.from_pretrained(model_dir)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(3)]
    batched = encode_batch(codec, images)  # a fixed size: one dense batch
    monkeypatch.setattr(codec.model, "encode", lambda x: pytest.fail("dense pass used for exact tokens"))
    exact = encode_batch(codec, images, exact=True)
    for image, tokens, dense in zip(images, exact, batched, strict=True):
        from_file = codec.unpack_tokens(codec.compress(image))[0][0].numpy()
        assert np.array_equal(tokens, from_file)
        assert (tokens == dense).mean() > 0.9
