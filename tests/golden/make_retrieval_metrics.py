#!/usr/bin/env python3
"""Reference retrieval metrics from open_clip's own get_clip_metrics, for the golden test.

Writes DIR/retrieval.safetensors (paired features of two sets) and DIR/retrieval.json (open_clip's
metrics for each). `distinct`: random features, no ties. `duplicates`: half of the captions repeat
another's text, as in real captioned sets; features are multiples of 1/4 so every score is exact
and duplicate captions tie exactly. open_clip ranks with torch.argsort, which is not stable, so
for `duplicates` it is also run with a stable descending argsort (ties go to the smaller index):
the rule torchclip implements.
Usage: make_retrieval_metrics.py DIR"""
import json
import os
import sys

import torch
from open_clip_train.train import get_clip_metrics
from safetensors.torch import save_file


def metrics(img, txt, stable=False):
    argsort = torch.argsort
    if stable:
        torch.argsort = lambda x, descending=False: torch.sort(x, descending=descending, stable=True).indices
    try:
        return {k: float(v) for k, v in get_clip_metrics(img, txt, torch.tensor(1.0)).items()}
    finally:
        torch.argsort = argsort


def main():
    out = sys.argv[1]
    g = torch.Generator().manual_seed(0)
    n, e = 300, 16
    img_a = torch.nn.functional.normalize(torch.randn(n, e, generator=g), dim=-1)
    txt_a = torch.nn.functional.normalize(img_a + 0.8 * torch.randn(n, e, generator=g), dim=-1)
    # Duplicates: 150 captions of their own, and 150 that repeat one of those exactly (another
    # image with the same text). Scores are exact: every value is a multiple of 1/4.
    half = n // 2
    quarter = lambda t: (t * 4).round().clamp(-8, 8) / 4
    img_b = quarter(torch.randn(n, e, generator=g))
    txt_b = torch.empty(n, e)
    txt_b[:half] = quarter(img_b[:half] + torch.randn(half, e, generator=g))
    txt_b[half:] = txt_b[torch.randperm(half, generator=g)]
    img_b[half:] = quarter(txt_b[half:] + torch.randn(half, e, generator=g))
    save_file({'image_distinct': img_a.contiguous(), 'text_distinct': txt_a.contiguous(),
               'image_duplicates': img_b.contiguous(), 'text_duplicates': txt_b.contiguous()},
              os.path.join(out, 'retrieval.safetensors'))
    ref = {'distinct': metrics(img_a, txt_a), 'duplicates_stable': metrics(img_b, txt_b, stable=True),
           'duplicates_openclip': metrics(img_b, txt_b),
           'duplicate_rows': int(n - torch.unique(txt_b, dim=0).shape[0])}
    with open(os.path.join(out, 'retrieval.json'), 'w') as f:
        json.dump(ref, f, indent=1, sort_keys=True)
    print(json.dumps(ref))


if __name__ == '__main__':
    main()
