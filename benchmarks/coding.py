"""Entropy-coding benchmark: size over the Shannon ideal, coding speed, and coding's share of encode time.

Tokens are sampled from a skewed synthetic prior (a Zipf law over each group's symbols, shuffled per group)
on the token grid of a 768×512 image at f16 (48×32 tokens). The model timing uses an untrained tokenizer of
the ``cpu-f16`` preset (its cost does not depend on its weights).

    .venv/bin/python benchmarks/coding.py [--json] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from wetok import Tokenizer, TokenizerConfig
from wetok import format as fmt
from wetok.codec import Codec
from wetok.entropy import RangeCoder, encode_payload, pack_bits, unpack_bits
from wetok.prior import PRIOR_TOTAL, Prior, fit_prior, quantize_frequencies

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
    share = None if args.no_model else model_share(args.repeats)
    if args.json:
        print(json.dumps({"grid": GRID, "rows": rows, "model": share}, indent=2))
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
    if share:
        print(", ".join(f"{k} {v:.4g}" for k, v in share.items()))


if __name__ == "__main__":
    main()
