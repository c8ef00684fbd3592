"""Entropy-coding benchmark: size over the Shannon ideal, coding speed, and coding's share of encode time.

Static/raw rows: tokens sampled from a skewed synthetic prior (a Zipf law over each group's symbols,
shuffled per group) on the token grid of a 768×512 image at f16 (48×32 tokens). Context rows: the bundled
``default`` model's prior and context model, on the tokens of ``examples/washington_monument.png`` tiled
over the token grid of a 768×512 and a 4096×4096 image (256×256 tokens), static beside context on the
same tokens; plus a context model fitted to a 6-group × 8-bit grid (speed only). The model timing uses an
untrained tokenizer of the ``cpu-f16`` preset (its cost does not depend on its weights).

    .venv/bin/python benchmarks/coding.py [--json] [--repeats 20] [--no-model]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wetok import Tokenizer, TokenizerConfig
from wetok import format as fmt
from wetok.codec import Codec
from wetok.context import ContextModel
from wetok.context_fit import fit_context_model
from wetok.entropy import ContextCoder, RangeCoder, encode_payload, pack_bits, unpack_bits
from wetok.prior import PRIOR_TOTAL, Prior, fit_prior, quantize_frequencies
from wetok.zoo import BUNDLED_DIR, load_codec

GRID = (32, 48)  # 512 rows × 768 columns of pixels at f16


def zipf_prior(groups: int, bits: int, exponent: float = 1.1, seed: int = 0) -> Prior:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, (1 << bits) + 1) ** exponent
    return Prior(quantize_frequencies(np.stack([rng.permutation(p) for _ in range(groups)])))


def sample_tokens(prior: Prior, count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = prior.frequencies.astype(np.float64) / PRIOR_TOTAL
    return np.stack([rng.choice(p.shape[1], size=count, p=row) for row in p], axis=1)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def coding_row(groups: int, bits: int, mode: str, repeats: int) -> dict:
    prior = zipf_prior(groups, bits)
    tokens = sample_tokens(prior, GRID[0] * GRID[1])
    coder = RangeCoder(prior)
    used, payload = encode_payload(tokens, bits, mode, coder)
    header = fmt.Header(b"bench!", used, 16 * GRID[0], 16 * GRID[1], 16, groups, bits)
    if used == "static":
        enc = best_time(lambda: coder.encode(tokens), repeats)
        dec = best_time(lambda: coder.decode(payload, len(tokens)), repeats)
    else:
        enc = best_time(lambda: pack_bits(tokens, bits), repeats)
        dec = best_time(lambda: unpack_bits(payload, tokens.size, bits), repeats)
    ideal_bits = prior.ideal_bits(tokens)
    file_bytes = len(payload) + fmt.header_bytes(header)
    ideal_file = fmt.header_bytes(header) + ideal_bits / 8
    return {
        "g": groups,
        "d'": bits,
        "mode": used,
        "symbols": int(tokens.size),
        "payload_bytes": len(payload),
        "ideal_payload_bytes": ideal_bits / 8,
        "payload_overhead_%": 100 * (8 * len(payload) / ideal_bits - 1),
        "file_bytes": file_bytes,
        "file_overhead_%": 100 * (file_bytes / ideal_file - 1),
        "bits_per_token": 8 * len(payload) / len(tokens),
        "bpp": 8 * file_bytes / (256 * GRID[0] * GRID[1]),
        "encode_Msym_per_s": tokens.size / enc / 1e6,
        "decode_Msym_per_s": tokens.size / dec / 1e6,
        "encode_ms": 1e3 * enc,
        "decode_ms": 1e3 * dec,
    }


def example_tokens(h: int, w: int) -> np.ndarray:
    """Tokens ``[h, w, g]`` of the example photo (encoded by the bundled default model), tiled over the grid:
    real, spatially correlated tokens without any data set."""
    photo = Path(__file__).resolve().parent.parent / "examples" / "washington_monument.png"
    tokens, _ = load_codec("default").encode_tokens(photo)
    t = tokens[0].numpy()
    return np.ascontiguousarray(np.tile(t, (-(-h // t.shape[0]), -(-w // t.shape[1]), 1))[:h, :w])


def context_rows(repeats: int) -> list[dict]:
    """static vs context on the bundled default model's tables, plus a 6x8-bit context model's speed."""
    directory = BUNDLED_DIR / "default"
    prior, context = Prior.load(directory), ContextModel.load(directory)
    coder, static = ContextCoder(context), RangeCoder(prior)
    rows = []
    for name, (h, w) in (("768x512", GRID), ("4096x4096", (256, 256))):
        tokens = example_tokens(h, w)
        reps = repeats if h * w < 10_000 else max(1, repeats // 10)
        for mode, enc, dec in (
            (
                "static",
                lambda t=tokens: static.encode(t.reshape(-1, prior.groups)),
                lambda data, n=h * w: static.decode(data, n),
            ),
            ("context", lambda t=tokens: coder.encode(t), lambda data, h=h, w=w: coder.decode(data, h, w)),
        ):
            data = enc()
            rows.append(
                _speed_row(f"default {name}", mode, tokens, data, enc, lambda d=data, f=dec: f(d), reps)
            )
    five = example_tokens(*GRID)  # a sixth group derived from two others: real spatial structure
    tokens = np.concatenate([five, (five[..., :1] + five[..., 1:2]) % 256], axis=-1)
    six = ContextCoder(fit_context_model([tokens], 6, 8, epochs=2))
    data = six.encode(tokens)
    rows.append(
        _speed_row(
            "6x8 768x512",
            "context",
            tokens,
            data,
            lambda: six.encode(tokens),
            lambda: six.decode(data, *GRID),
            repeats,
        )
    )
    return rows


def _speed_row(tables: str, mode: str, tokens: np.ndarray, data: bytes, enc, dec, repeats: int) -> dict:
    n = tokens.shape[0] * tokens.shape[1]
    enc_s, dec_s = best_time(enc, repeats), best_time(dec, repeats)
    return {
        "tables": tables,
        "mode": mode,
        "tokens": n,
        "payload_bytes": len(data),
        "bits_per_token": 8 * len(data) / n,
        "encode_ms": 1e3 * enc_s,
        "decode_ms": 1e3 * dec_s,
        "encode_Msym_per_s": tokens.size / enc_s / 1e6,
        "decode_Msym_per_s": tokens.size / dec_s / 1e6,
    }


def model_share(repeats: int) -> dict:
    """Coding time as a share of a whole ``compress`` of a 768×512 image with the cpu-f16 preset."""
    torch.manual_seed(0)
    model = Tokenizer(TokenizerConfig.preset("cpu-f16")).eval()
    image = np.random.default_rng(0).integers(0, 256, (16 * GRID[0], 16 * GRID[1], 3), dtype=np.uint8)
    tokens, size = Codec(model).encode_tokens(image)  # also the warm-up
    codec = Codec(model, fit_prior([tokens], 4, 8))  # a prior that fits, so static coding is used
    encode = best_time(lambda: codec.encode_tokens(image), max(1, repeats // 10))
    pack = best_time(lambda: codec.pack_tokens(tokens, size, "static"), repeats)
    data = codec.pack_tokens(tokens, size, "static")
    assert fmt.unpack(data)[0].mode == "static"
    unpack = best_time(lambda: codec.unpack_tokens(data), repeats)
    return {
        "model_encode_ms": 1e3 * encode,
        "pack_static_ms": 1e3 * pack,
        "unpack_static_ms": 1e3 * unpack,
        "coding_share_of_encode_%": 100 * pack / (encode + pack),
        "bytes": len(data),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-model", action="store_true", help="skip the cpu-f16 encode timing")
    args = parser.parse_args()
    shapes = [(4, 8), (5, 8), (1, 18)]
    rows = [coding_row(g, b, mode, args.repeats) for g, b in shapes for mode in ("raw", "static")]
    ctx_rows = context_rows(args.repeats)
    share = None if args.no_model else model_share(args.repeats)
    if args.json:
        print(json.dumps({"grid": GRID, "rows": rows, "context_rows": ctx_rows, "model": share}, indent=2))
        return
    cols = [
        "g",
        "d'",
        "mode",
        "file_bytes",
        "bits_per_token",
        "bpp",
        "payload_overhead_%",
        "file_overhead_%",
        "encode_Msym_per_s",
        "decode_Msym_per_s",
    ]
    print(f"token grid {GRID[1]}x{GRID[0]} (768x512 at f16), Zipf(1.1) prior, tokens sampled from it")
    print(" | ".join(f"{c:>12}" for c in cols))
    for row in rows:
        print(
            " | ".join(f"{row[c]:>12.4g}" if isinstance(row[c], float) else f"{row[c]!s:>12}" for c in cols)
        )
    print(
        f"\ncontext vs static (symbols = tokens x g; {torch.get_num_threads()} torch threads, numpy as set "
        "by "
        "OMP_NUM_THREADS)"
    )
    cols = [
        "tables",
        "mode",
        "tokens",
        "payload_bytes",
        "bits_per_token",
        "encode_ms",
        "decode_ms",
        "encode_Msym_per_s",
        "decode_Msym_per_s",
    ]
    print(" | ".join(f"{c:>17}" for c in cols))
    for row in ctx_rows:
        print(
            " | ".join(f"{row[c]:>17.4g}" if isinstance(row[c], float) else f"{row[c]!s:>17}" for c in cols)
        )
    if share:
        print(", ".join(f"{k} {v:.4g}" for k, v in share.items()))


if __name__ == "__main__":
    main()
