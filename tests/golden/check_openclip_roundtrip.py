#!/usr/bin/env python3
"""Loads a torchclip export (PREFIX.json, PREFIX.safetensors) into open_clip, strictly, runs it on
the inputs of IO.safetensors and compares with the outputs stored there. Prints the largest
differences; exits 1 if any exceeds 1e-5.
Usage: check_openclip_roundtrip.py PREFIX IO.safetensors"""
import json
import sys

import open_clip
import torch
from safetensors.torch import load_file


def main():
    prefix, io_path = sys.argv[1], sys.argv[2]
    with open(prefix + '.json') as f:
        cfg = json.load(f)
    custom = cfg.pop('custom_text', False)
    model = (open_clip.CustomTextCLIP if custom else open_clip.CLIP)(**cfg).eval()
    model.load_state_dict(load_file(prefix + '.safetensors'), strict=True)
    io = load_file(io_path)
    with torch.no_grad():
        img = model.encode_image(io['images'])
        txt = model.encode_text(io['texts'])
    di = (img - io['image_features']).abs().max().item()
    dt = (txt - io['text_features']).abs().max().item()
    print(f'open_clip on the torchclip export: max |diff| image {di:.3g}, text {dt:.3g}')
    sys.exit(0 if di < 1e-5 and dt < 1e-5 else 1)


if __name__ == '__main__':
    main()
