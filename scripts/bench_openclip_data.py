#!/usr/bin/env python3
"""open_clip's input pipeline on the same files as `torchclip bench data`: PIL decode,
open_clip.image_transform (RandomResizedCrop, bicubic, normalise), open_clip's tokenizer, and a
torch DataLoader with the same batch size and worker count. Prints one JSON line with images/s.
Usage: bench_openclip_data.py --csv FILE --workers N --batch B --size S"""
import argparse
import csv
import json
import os
import time

import open_clip
import torch
from PIL import Image


class CsvDataset(torch.utils.data.Dataset):
    def __init__(self, path, transform, tokenizer):
        with open(path, newline='') as f:
            rows = list(csv.DictReader(f))
        base = os.path.dirname(path)
        self.items = [(os.path.join(base, r['filepath']), r['title']) for r in rows]
        self.transform, self.tokenizer = transform, tokenizer

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, caption = self.items[i]
        image = self.transform(Image.open(path))
        return image, self.tokenizer([caption])[0]


def worker_init(_):
    torch.set_num_threads(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--csv', required=True)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--size', type=int, default=224)
    args = ap.parse_args()
    torch.set_num_threads(max(1, args.workers))
    transform = open_clip.image_transform(args.size, is_train=True)
    ds = CsvDataset(args.csv, transform, open_clip.get_tokenizer('ViT-B-32'))
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                         worker_init_fn=worker_init, drop_last=False,
                                         persistent_workers=False)
    t0 = time.perf_counter()
    n = 0
    for images, texts in loader:
        n += images.shape[0]
    dt = time.perf_counter() - t0
    print(json.dumps({'images': n, 'seconds': dt, 'images_per_second': n / dt, 'workers': args.workers,
                      'open_clip_version': open_clip.__version__}))


if __name__ == '__main__':
    main()
