#!/usr/bin/env python3
"""Zero-shot parity with open_clip on a trained model: loads a `torchclip export` (PREFIX.json +
PREFIX.safetensors) into open_clip, classifies the images of a labelled CSV with open_clip's own
preprocess, tokenizer and template averaging, and compares each image's top-1 with torchclip's
(`torchclip zeroshot --csv` output). Prints one JSON line.
Usage: zeroshot_parity_openclip.py --export PREFIX --data test.csv --classes classes.txt
       --templates templates.txt --ours ours.csv"""
import argparse
import csv
import json
import os

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser()
    for a in ('--export', '--data', '--classes', '--templates', '--ours'):
        ap.add_argument(a, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    with open(args.export + '.json') as f:
        cfg = json.load(f)
    model = open_clip.CLIP(**cfg).eval()
    model.load_state_dict(load_file(args.export + '.safetensors'))
    size = cfg['vision_cfg']['image_size']
    preprocess = open_clip.image_transform(size, is_train=False)
    tokenizer = open_clip.get_tokenizer('ViT-B-32', context_length=cfg['text_cfg']['context_length'])
    classes = [l.strip() for l in open(args.classes) if l.strip()]
    templates = [l.strip() for l in open(args.templates) if l.strip()]
    root = os.path.dirname(args.data)
    rows = list(csv.DictReader(open(args.data)))
    with torch.no_grad():
        w = torch.stack([F.normalize(F.normalize(model.encode_text(tokenizer([t.replace('{}', c) for t in templates])), dim=-1)
                                     .mean(0), dim=0) for c in classes], dim=1)
        preds = []
        for i in range(0, len(rows), 500):
            x = torch.stack([preprocess(Image.open(os.path.join(root, r['filepath']))) for r in rows[i:i + 500]])
            preds += (F.normalize(model.encode_image(x), dim=-1) @ w).argmax(-1).tolist()
    ours = {r['path']: r['class_1'] for r in csv.DictReader(open(args.ours))}
    same = sum(ours[os.path.join(root, r['filepath'])] == classes[p] for r, p in zip(rows, preds))
    top1 = sum(int(r['label']) == p for r, p in zip(rows, preds)) / len(rows)
    ours_top1 = sum(ours[os.path.join(root, r['filepath'])] == classes[int(r['label'])] for r in rows) / len(rows)
    print(json.dumps({'images': len(rows), 'same_top1': same, 'openclip_top1': top1, 'torchclip_top1': ours_top1}))


if __name__ == '__main__':
    main()
