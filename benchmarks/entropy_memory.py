"""Peak memory of the quantizer's entropy loss (forward + backward): LFQ vs GQ vs BSQ for d = 8 … 40.

    .venv/bin/python benchmarks/entropy_memory.py [--dims 8,16,24,32,40] [--tokens 2048] [--budget-gb 4]
                                                  [--device auto|cpu|cuda] [--json]

All three are ``wetok.quantizer.entropy_terms`` on a latent ``[B, d, 16, 16]`` (``tokens = B·256``) with a
different split of the ``d`` channels: LFQ one group of ``d`` bits (MAGVIT-v2), GQ groups of 8 bits
(WeTok), BSQ ``d`` groups of 1 bit. The loss ``token_entropy - codebook_entropy`` is back-propagated.

How peak memory is measured (one honest method per device):

* CPU: each configuration runs in a fresh child process. After imports, the latent and one small warm-up
  call, the child reads its current resident set size (``/proc/self/statm``); after forward + backward
  it reads the peak (``getrusage(RUSAGE_SELF).ru_maxrss``). ``peak_mb`` is the difference: every byte the
  loss made resident at its high-water mark (tensors, autograd buffers, allocator slack). Resolution about
  1 MB; below that it reads 0.
* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus the bytes allocated
  before the call (tensor bytes as the caching allocator hands them out).

``softmax_mb`` is the analytic size of one float32 ``[N, g, 2^d']`` tensor; a configuration whose estimate
(``ESTIMATE_FACTOR`` such tensors) exceeds ``--budget-gb`` is not run and reported as OOM-skipped with
that estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

ESTIMATE_FACTOR = 7  # [N, g, 2^d'] float32 tensors live at the peak (fwd + bwd); measured 5 (LFQ) to 7 (GQ)
METHODS = {"LFQ": lambda d: d, "GQ": lambda d: 8, "BSQ": lambda d: 1}  # d' as a function of d
MB = 2**20


def softmax_bytes(tokens: int, d: int, group_bits: int) -> int:
    return tokens * (d // group_bits) * 2**group_bits * 4


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _run(d: int, group_bits: int, tokens: int, device: str) -> tuple[float, float]:
    """Forward + backward of the entropy loss; returns ``(extra peak bytes, seconds)``."""
    from wetok.quantizer import entropy_terms

    dev = torch.device(device)
    warm = torch.randn(1, 8, 2, 2, device=dev, requires_grad=True)
    sum(entropy_terms(warm, 1)).backward()
    latent = torch.randn(tokens // 256, d, 16, 16, device=dev, requires_grad=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_bytes()
    t0 = time.perf_counter()
    tok, cb = entropy_terms(latent, group_bits, 0.01, "pooled")
    (tok - cb).backward()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(0, peak - before), time.perf_counter() - t0


def measure(d: int, group_bits: int, tokens: int, device: str) -> tuple[float, float]:
    """Run one configuration (in a child process on CPU, so its peak is its own)."""
    if device == "cuda":
        return _run(d, group_bits, tokens, device)
    cmd = [sys.executable, __file__, "--child", f"{d},{group_bits},{tokens}"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    peak, seconds = json.loads(out.strip().splitlines()[-1])
    return peak, seconds


def rows(dims: list[int], tokens: int, budget: float, device: str) -> list[dict]:
    out = []
    for d in dims:
        for method, bits_of in METHODS.items():
            bits = bits_of(d)
            if d % bits:
                continue
            analytic = softmax_bytes(tokens, d, bits)
            row = {
                "method": method,
                "d": d,
                "g": d // bits,
                "d_prime": bits,
                "tokens": tokens,
                "softmax_mb": analytic / MB,
                "peak_mb": None,
                "ms": None,
                "status": "ok",
            }
            if ESTIMATE_FACTOR * analytic > budget:
                row["status"] = f"OOM-skipped (would need ~{ESTIMATE_FACTOR * analytic / 2**30:,.1f} GB)"
            else:
                peak, seconds = measure(d, bits, tokens, device)
                row.update(peak_mb=peak / MB, ms=1000 * seconds)
            out.append(row)
    return out


def _table(result: dict) -> None:
    print(
        f"entropy loss fwd+bwd, {result['tokens']} tokens, device {result['device']} "
        f"({result['method']}), budget {result['budget_gb']} GB"
    )
    cols = f"{'method':<6} {'d':>3} {'g':>3} {'d_prime':>7} {'softmax MB':>11} {'peak MB':>9} {'ms':>8}"
    print(cols + "  status")
    for r in result["rows"]:
        peak = f"{r['peak_mb']:9.1f}" if r["peak_mb"] is not None else f"{'-':>9}"
        ms = f"{r['ms']:8.1f}" if r["ms"] is not None else f"{'-':>8}"
        head = f"{r['method']:<6} {r['d']:>3} {r['g']:>3} {r['d_prime']:>7} {r['softmax_mb']:11.4g}"
        print(f"{head} {peak} {ms}  {r['status']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", default="8,16,24,32,40", help="comma-separated d values")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per batch (multiple of 256)")
    ap.add_argument("--budget-gb", type=float, default=4.0, help="skip configurations estimated above this")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        d, bits, tokens = map(int, args.child.split(","))
        print(json.dumps(_run(d, bits, tokens, "cpu")))
        return
    if args.tokens % 256:
        ap.error("--tokens must be a multiple of 256 (latents are [B, d, 16, 16])")
    from wetok.device import resolve_device

    device = str(resolve_device(args.device))
    method = "cuda max_memory_allocated" if device == "cuda" else "peak RSS increase in a child process"
    dims = [int(x) for x in args.dims.split(",")]
    result = {
        "device": device,
        "method": method,
        "tokens": args.tokens,
        "budget_gb": args.budget_gb,
        "threads": torch.get_num_threads(),
        "rows": rows(dims, args.tokens, args.budget_gb * 2**30, device),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _table(result)


if __name__ == "__main__":
    main()
