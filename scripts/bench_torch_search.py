#!/usr/bin/env python3
"""The peer of `torchclip bench search`: the same exact top-k search in PyTorch from Python
(embeddings @ query, then topk) on a random normalised index of the same size and dtype. fp16
is searched as fp16 matmul when PyTorch supports it on this CPU, else converted per call.
Prints one JSON line."""
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
    ap.add_argument('--dtype', default='fp16')
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(args.rows, args.dim, generator=g), dim=1)
    emb = emb.half() if args.dtype == 'fp16' else emb
    q = torch.nn.functional.normalize(torch.randn(args.queries, args.dim, generator=g), dim=1).to(emb.dtype)
    times = []
    for i in range(args.queries + 1):
        t0 = time.perf_counter()
        scores = emb @ q[i % args.queries]
        scores.topk(args.k)
        if i:
            times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({'ms_per_query': statistics.median(times), 'torch': torch.__version__}))


if __name__ == '__main__':
    main()
