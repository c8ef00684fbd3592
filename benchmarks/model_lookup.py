"""Finding a model by id (``wetok info`` / ``decompress``) against the size of the other installed models.

    .venv/bin/python benchmarks/model_lookup.py [--sizes-mb 0,256,1024] [--models 3] [--json]

For each size, a temporary registry holds ``--models`` model directories whose weights file is that big
(zeros: lookup never needs real weights) plus the one tiny model that made the file; the time is the
median of 5 ``zoo.find_codec_by_model_id`` calls (lookup + loading the tiny model), in this process. With
stored ids (``model_id.json``) it should not grow with the size; ``--no-stored-id`` removes the stored ids
from the big models, so their ids are computed (once, then remembered in a temporary user cache): the first
call shows the cost the stored ids avoid.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from wetok import zoo
from wetok.codec import Codec
from wetok.config import TokenizerConfig
from wetok.modeldir import CONFIG_NAME, MODEL_ID_NAME, WEIGHTS_NAME, _cached_model_id, write_model_id
from wetok.tokenizer import Tokenizer


def _registry(root: Path, size_mb: int, models: int, stored: bool) -> bytes:
    """Fill ``root`` with ``models`` big directories and one tiny one; returns the tiny one's id."""
    for i in range(models):
        big = root / f"big{i}"
        big.mkdir(parents=True)
        TokenizerConfig.preset("cpu-f16").save(big / CONFIG_NAME)
        save_file({"w": torch.zeros(max(1, size_mb << 18), dtype=torch.float32)}, str(big / WEIGHTS_NAME))
        if stored:
            write_model_id(big, bytes([i + 1] * 6))
        else:
            (big / MODEL_ID_NAME).unlink(missing_ok=True)
    torch.manual_seed(0)
    tiny = Codec(Tokenizer(TokenizerConfig.preset("tiny")))
    tiny.save_pretrained(root / "zz-tiny")  # searched last
    return tiny.model_id


def measure(size_mb: int, models: int, stored: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "models"
        os.environ["WETOK_MODELS"] = str(root)
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        os.environ["XDG_DATA_HOME"] = str(Path(tmp) / "data")
        _cached_model_id.cache_clear()
        model_id = _registry(root, size_mb, models, stored)
        os.sync()  # write-back of the files just made must not land in the timings
        times = []
        for _ in range(5):
            start = time.perf_counter()
            assert zoo.find_codec_by_model_id(model_id).model_id == model_id
            times.append(1000 * (time.perf_counter() - start))
    return {"size_mb": size_mb, "models": models, "stored_ids": stored, "first_ms": times[0],
            "median_ms": statistics.median(times)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mb", default="0,256,1024")
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--no-stored-id", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [measure(int(s), args.models, not args.no_stored_id) for s in args.sizes_mb.split(",")]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'other models':>14} {'MB each':>8} {'stored ids':>11} {'first ms':>9} {'median ms':>10}")
    for r in rows:
        print(f"{r['models']:>14} {r['size_mb']:>8} {str(r['stored_ids']):>11} {r['first_ms']:>9.1f} "
              f"{r['median_ms']:>10.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
