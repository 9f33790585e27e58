#!/usr/bin/env python3
"""Writes tests/golden/architecture.json: what open_clip builds for each of our model configs.

For every configs/models/*.yaml it creates the model with open_clip (random init, no download),
and records the parameter counts (total, visual, text), every state_dict name with its shape,
the forward FLOPs of one image and one text sequence as torch.utils.flop_counter counts them, and
the parameters open_clip's training exempts from weight decay (its own rule, read from
open_clip_train/main.py).
The C++ golden test compares torchclip's models against this file.

Usage: python3 tests/golden/make_golden.py [--out FILE] [--check FILE]
  --check FILE  regenerate and compare with FILE; exit 1 on any difference.
"""
import argparse
import json
import os
import sys

import open_clip
import torch
import yaml
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def openclip_weight_decay_exclude():
    """The `exclude = lambda n, p: ...` of open_clip_train/main.py, taken from its source (importing
    that module needs webdataset and braceexpand, which are not installed)."""
    import ast
    import importlib.util
    path = os.path.join(os.path.dirname(importlib.util.find_spec('open_clip_train').origin), 'main.py')
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda)
                and any(isinstance(t, ast.Name) and t.id == 'exclude' for t in node.targets)):
            return eval(compile(ast.Expression(node.value), path, 'eval'))
    sys.exit(f'{path}: no `exclude = lambda n, p: ...` (the weight-decay rule) found')


EXCLUDE = openclip_weight_decay_exclude()


def build(cfg):
    cfg = dict(cfg)
    custom = cfg.pop('custom_text', False)
    cls = open_clip.CustomTextCLIP if custom else open_clip.CLIP
    return cls(**cfg)


def flops(fn):
    # The math attention backend decomposes into matmuls that FlopCounterMode counts; it has no
    # formula for the fused CPU kernel.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def describe(cfg):
    torch.manual_seed(0)
    model = build(cfg).train()  # train mode: the eval fast path of nn.MultiheadAttention is not counted
    text_prefix = ('text.',) if cfg.get('custom_text') else (
        'token_embedding', 'positional_embedding', 'transformer.', 'ln_final', 'text_projection')
    named = dict(model.named_parameters())
    visual = sum(p.numel() for n, p in named.items() if n.startswith('visual.'))
    text = sum(p.numel() for n, p in named.items() if n.startswith(text_prefix))
    size = cfg['vision_cfg'].get('image_size', 224)
    ctx = cfg['text_cfg'].get('context_length', 77)
    vocab = cfg['text_cfg'].get('vocab_size', 49408)
    image = torch.zeros(1, 3, size, size)
    ids = torch.zeros(1, ctx, dtype=torch.long)
    ids[0, 5] = vocab - 1
    image_flops = flops(lambda: model.encode_image(image))
    text_flops = flops(lambda: model.encode_text(ids))
    return {
        'parameters': sum(p.numel() for p in named.values()),
        'visual_parameters': visual,
        'text_parameters': text,
        'image_flops': image_flops,
        'text_flops': text_flops,
        'state_dict': {k: list(v.shape) for k, v in sorted(model.state_dict().items())},
        'no_weight_decay': sorted(n for n, p in named.items() if EXCLUDE(n, p)),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=os.path.join(ROOT, 'tests', 'golden', 'architecture.json'))
    ap.add_argument('--check')
    args = ap.parse_args()
    cfg_dir = os.path.join(ROOT, 'configs', 'models')
    result = {'open_clip_version': open_clip.__version__, 'torch_version': torch.__version__.split('+')[0],
              'models': {}}
    for fname in sorted(os.listdir(cfg_dir)):
        if fname.endswith('.yaml'):
            with open(os.path.join(cfg_dir, fname)) as f:
                cfg = yaml.safe_load(f)
            result['models'][fname[:-5]] = describe(cfg)
    text = json.dumps(result, indent=1, sort_keys=True) + '\n'
    if args.check:
        with open(args.check) as f:
            old = json.load(f)
        if old != json.loads(text):
            for name in sorted(set(old['models']) | set(result['models'])):
                if old['models'].get(name) != result['models'].get(name):
                    print(f'golden mismatch for {name}', file=sys.stderr)
            if old.get('open_clip_version') != result['open_clip_version']:
                print('open_clip version differs', file=sys.stderr)
            sys.exit(1)
        print(f'{args.check} matches open_clip {open_clip.__version__} for {len(result["models"])} configs')
        return
    with open(args.out, 'w') as f:
        f.write(text)
    print(f'wrote {args.out} ({len(result["models"])} configs)')


if __name__ == '__main__':
    main()
