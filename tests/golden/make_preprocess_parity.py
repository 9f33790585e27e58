#!/usr/bin/env python3
"""open_clip's side of the preprocessing and zero-shot parity test. Loads the randomly initialised
open_clip model NAME written by make_openclip_parity.py (OUT_DIR/NAME.safetensors), runs
open_clip's own eval `preprocess` (PIL, bicubic) on real image files, and writes
OUT_DIR/preprocess.safetensors with:
  pixels          [N, 3, S, S]  preprocess output (normalised)
  image_features  [N, E]        encode_image(pixels), normalised
  classifier      [E, C]        zero-shot weights: templates averaged per class, renormalised
  probs           [N, C]        softmax(100 * image_features @ classifier)
and OUT_DIR/preprocess.classes.txt and .templates.txt, one per line (images are in argument order).
Usage: make_preprocess_parity.py OUT_DIR NAME IMAGE [IMAGE ...]"""
import os
import sys

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

CLASSES = ['astronaut', 'cat', 'cup of coffee', 'rocket', 'motorcycle', 'galaxy', 'retina', 'coins', 'brick wall',
           'grass', 'gravel', 'camera']
TEMPLATES = ['a photo of a {}.', 'a blurry photo of the {}.', 'a close-up photo of a {}.', 'itap of a {}.']


def main():
    out, name, images = sys.argv[1], sys.argv[2], sys.argv[3:]
    model = open_clip.create_model(name, pretrained=None).eval()
    model.load_state_dict(load_file(os.path.join(out, name + '.safetensors')))
    size = model.visual.image_size
    preprocess = open_clip.image_transform(size[0] if isinstance(size, (tuple, list)) else size, is_train=False)
    tokenizer = open_clip.get_tokenizer(name)
    pixels = torch.stack([preprocess(Image.open(p)) for p in images])
    with torch.no_grad():
        feats = F.normalize(model.encode_image(pixels), dim=-1)
        weights = []
        for c in CLASSES:
            t = F.normalize(model.encode_text(tokenizer([tpl.format(c) for tpl in TEMPLATES])), dim=-1).mean(0)
            weights.append(t / t.norm())
        classifier = torch.stack(weights, dim=1)
        probs = (100.0 * feats @ classifier).softmax(dim=-1)
    save_file({'pixels': pixels.contiguous(), 'image_features': feats.contiguous(), 'classifier': classifier.contiguous(),
               'probs': probs.contiguous()}, os.path.join(out, 'preprocess.safetensors'))
    for what, lines in (('classes', CLASSES), ('templates', TEMPLATES)):
        with open(os.path.join(out, f'preprocess.{what}.txt'), 'w') as f:
            f.write(''.join(line + '\n' for line in lines))


if __name__ == '__main__':
    main()
