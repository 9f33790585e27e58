#!/usr/bin/env python3
"""Turns an open_clip or OpenAI pickle checkpoint (.pt/.bin; a state dict, a training checkpoint
with 'state_dict', or an OpenAI JIT archive) into safetensors for `torchclip convert`.
open_clip itself reads the file, so every format it loads is covered; nothing is downloaded.

Usage: convert_openclip_pickle.py --model ViT-B-32 --checkpoint epoch_32.pt --out model.safetensors
Then:  torchclip convert --openclip-config ViT-B-32 --weights model.safetensors --out MODEL_DIR"""
import argparse

import open_clip
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model', required=True, help='open_clip model config name, e.g. ViT-B-32')
    ap.add_argument('--checkpoint', required=True, help='a local .pt/.bin file')
    ap.add_argument('--out', required=True, help='output .safetensors path')
    args = ap.parse_args()
    model = open_clip.create_model(args.model, pretrained=args.checkpoint)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, args.out, metadata={'format': 'pt', 'source': args.checkpoint})
    print(f'wrote {args.out}: {len(state)} tensors')


if __name__ == '__main__':
    main()
