#!/usr/bin/env python3
"""open_clip's training step on the same architecture, batch, precision and thread count as
`torchclip bench train`: CLIP built from our YAML config with open_clip.CLIP, ClipLoss, AdamW
(OpenCLIP's parameter groups), synthetic images and token ids. Prints one JSON line.
Usage: bench_openclip_train.py --config configs/models/X.yaml --batch N --steps K --warmup W
       --threads T [--precision fp32|bf16] [--grad-checkpointing] [--device cpu|cuda:N] [--compile]
On CUDA the step is timed between synchronisations, and --compile runs the model under
torch.compile (warm-up steps include the compilation)."""
import argparse
import json
import statistics
import time

import open_clip
import torch
import yaml
from open_clip.loss import ClipLoss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--config', required=True)
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--precision', default='fp32')
    ap.add_argument('--grad-checkpointing', action='store_true')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--compile', action='store_true')
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True  # what the torchclip side does by default (train.tf32)
        torch.backends.cudnn.allow_tf32 = True
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with open(args.config) as f:
        cfg = yaml.safe_load(f)
    cfg.pop('custom_text', None)
    model = open_clip.CLIP(**cfg).train().to(device)
    model.set_grad_checkpointing(args.grad_checkpointing)
    exclude = lambda n, p: p.ndim < 2 or 'bn' in n or 'ln' in n or 'bias' in n or 'logit_scale' in n
    named = list(model.named_parameters())
    groups = [{'params': [p for n, p in named if exclude(n, p)], 'weight_decay': 0.},
              {'params': [p for n, p in named if not exclude(n, p)], 'weight_decay': 0.2}]
    # fused=True on CUDA, as OpenCLIP users get it for the fastest step (our side is fused too).
    opt = torch.optim.AdamW(groups, lr=5e-4, betas=(0.9, 0.98), eps=1e-6, fused=device.type == 'cuda')
    forward = torch.compile(model) if args.compile else model
    loss_fn = ClipLoss()
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    ctx, vocab = model.context_length, model.vocab_size
    images = torch.randn(args.batch, 3, size, size, device=device)
    # Captions of 8 to 24 tokens padded with zeros, EOT last: the same rule as torchclip's side.
    ids = torch.randint(1, vocab - 1, (args.batch, ctx))
    lo, hi = min(8, ctx - 1), min(24, ctx - 1)
    eot = torch.randint(lo, hi + 1, (args.batch, 1))
    ids[torch.arange(ctx).unsqueeze(0) > eot] = 0
    ids.scatter_(1, eot, vocab - 1)
    ids = ids.to(device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    times = []
    for i in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == 'bf16'):
            img, txt, scale = forward(images, ids)
            loss = loss_fn(img.float(), txt.float(), scale)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({'step_seconds_median': med, 'samples_per_second': args.batch / med, 'threads': args.threads,
                      'device': str(device), 'compile': args.compile, 'open_clip_version': open_clip.__version__}))


if __name__ == '__main__':
    main()
