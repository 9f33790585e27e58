#!/usr/bin/env python3
"""Creates randomly initialised open_clip models (seeded, no download) and writes, for each, its
weights (NAME.safetensors, open_clip's own state_dict) and NAME.io.safetensors: fixed inputs and
open_clip's outputs on them (image and text features before normalisation, logits_per_image).
The golden parity test converts the weights with torchclip and compares.
Usage: make_openclip_parity.py OUT_DIR NAME [NAME ...]"""
import os
import sys

import open_clip
import torch
from safetensors.torch import save_file


def main():
    out, names = sys.argv[1], sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    for name in names:
        torch.manual_seed(0)
        model = open_clip.create_model(name, pretrained=None).eval()
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        g = torch.Generator().manual_seed(1)
        images = torch.randn(3, 3, size, size, generator=g)
        texts = open_clip.get_tokenizer(name)(['a photo of a cat.', 'A diagram of a CPU, drawn by hand!', 'ok'])
        with torch.no_grad():
            img = model.encode_image(images)
            txt = model.encode_text(texts)
            logits = model.logit_scale.exp() * torch.nn.functional.normalize(img, dim=-1) @ \
                torch.nn.functional.normalize(txt, dim=-1).T
        sd = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(sd, os.path.join(out, name + '.safetensors'))
        if name == 'RN50':  # also as a pickle, for models/convert_openclip_pickle.py
            torch.save({'epoch': 1, 'state_dict': sd}, os.path.join(out, name + '.pt'))
        io = {'images': images, 'texts': texts, 'image_features': img.contiguous(),
              'text_features': txt.contiguous(), 'logits_per_image': logits.contiguous()}
        if hasattr(model.visual, 'grid_size'):  # ViT: open_clip's resize of the position grid to 320 px
            bigger = open_clip.create_model(name, pretrained=None, force_image_size=320)
            resized = {'visual.positional_embedding': sd['visual.positional_embedding'].clone()}
            open_clip.model.resize_pos_embed(resized, bigger)
            io['positional_embedding_320'] = resized['visual.positional_embedding'].contiguous()
        save_file(io, os.path.join(out, name + '.io.safetensors'))
        print(f'{name}: {sum(p.numel() for p in model.parameters())} parameters')


if __name__ == '__main__':
    main()
