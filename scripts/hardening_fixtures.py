#!/usr/bin/env python3
"""Writes the inputs of scripts/hardening_repro.sh into DIR with the standard library only:
small PNG and BMP images, CSV files (byte-order mark, tab-separated, a malformed quote, labels
past a class list), a WebDataset shard with an empty caption and a member without a key, a
folder named like a shard, and a safetensors file with an absurd shape."""
import io
import json
import os
import struct
import sys
import tarfile
import zlib


def png(w, h, rgb):
    raw = b''.join(b'\x00' + bytes(rgb) * w for _ in range(h))
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) +
            chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def bmp(w, h, rgb):
    row = bytes(reversed(rgb)) * w
    row += b'\x00' * ((4 - len(row) % 4) % 4)
    pixels = row * h
    header = struct.pack('<2sIHHI', b'BM', 54 + len(pixels), 0, 0, 54)
    info = struct.pack('<IiiHHIIiiII', 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def main():
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    w = lambda name, data: open(os.path.join(d, name), 'wb').write(data)
    w('a.png', png(32, 32, (200, 30, 30)))
    w('b.png', png(32, 32, (30, 30, 200)))
    # An ImageFolder of BMPs, and an ImageFolder whose root is named like a shard.
    for root in ('bmps', 'folder.tar'):
        os.makedirs(os.path.join(d, root, 'red'), exist_ok=True)
        for i in range(2):
            name = f'{i}.bmp' if root == 'bmps' else f'{i}.png'
            data = bmp(32, 32, (200, 30, 30)) if root == 'bmps' else png(32, 32, (200, 30, 30))
            w(os.path.join(root, 'red', name), data)
    a, b = os.path.join(d, 'a.png'), os.path.join(d, 'b.png')
    w('bom.csv', ('\ufefffilepath,title\n' + f'{a},a red square\n{b},a blue square\n').encode())
    w('tabs.csv', f'filepath\ttitle\n{a}\ta red square\n{b}\ta blue square\n'.encode())
    # The closing quote of row 2 is followed by text: malformed, and row 3 must survive.
    w('quote.csv', f'filepath,title\n"{a}"x,a red square\n{b},a blue square\n'.encode())
    w('labels.csv', f'filepath,title,label\n{a},a,0\n{b},b,1\n{a},c,9\n'.encode())
    # A shard: sample 0 complete, sample 1 with an empty caption, a member with an empty key.
    with tarfile.open(os.path.join(d, 'shard-0.tar'), 'w') as t:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        add('s0.png', png(32, 32, (200, 30, 30)))
        add('s0.txt', b'a red square')
        add('s1.png', png(32, 32, (30, 30, 200)))
        add('s1.txt', b'')
        add('.png', png(32, 32, (30, 200, 30)))
        add('.txt', b'a green square')
    # safetensors: one tensor of an absurd shape (its bytes would be ~4e22).
    header = json.dumps({'visual.proj': {'dtype': 'F32', 'shape': [99999999999, 99999999999], 'data_offsets': [0, 4]}}).encode()
    w('absurd.safetensors', struct.pack('<Q', len(header)) + header + b'\x00' * 4)


if __name__ == '__main__':
    main()
