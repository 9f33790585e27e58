#!/usr/bin/env python3
"""The peer of `torchclip bench search`: the same exact top-k search in PyTorch from Python
(embeddings @ queries, then topk) on a random normalised index of the same size and dtype, one
query at a time and in batches. fp16 is searched as fp16 matmul (PyTorch's own CPU kernels).
Prints one JSON line: {"torch": version, "ms_b1": ms per query at batch 1, "ms_b16": ..., ...}."""
import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rows', type=int, default=1000000)
    ap.add_argument('--dim', type=int, default=512)
    ap.add_argument('--k', type=int, default=10)
    ap.add_argument('--queries', type=int, default=20)
    ap.add_argument('--batches', default='1,16,256')
    ap.add_argument('--dtype', default='fp16')
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(',')]
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(args.rows, args.dim, generator=g), dim=1)
    emb = emb.half() if args.dtype == 'fp16' else emb
    n = max([args.queries] + batches)
    q = torch.nn.functional.normalize(torch.randn(n, args.dim, generator=g), dim=1).to(emb.dtype)
    out = {'torch': torch.__version__}
    for b in batches:
        times = []
        # Single queries: a warm-up, then `queries` timed. A batch is timed 3 times, or once when
        # it is large (PyTorch's fp16 CPU matmul can take seconds per batch).
        reps = args.queries + 1 if b == 1 else (3 if b <= 16 else 1)
        for i in range(reps):
            qb = q[i % n:i % n + 1] if b == 1 else q[:b]
            t0 = time.perf_counter()
            scores = emb @ qb.t()  # [N, b]
            scores.topk(args.k, dim=0)
            if b != 1 or i:
                times.append((time.perf_counter() - t0) * 1e3 / b)
        out[f'ms_b{b}'] = statistics.median(times)
    print(json.dumps(out))


if __name__ == '__main__':
    main()
