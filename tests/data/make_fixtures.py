#!/usr/bin/env python3
"""Writes the image fixtures of the data tests (tests/data/images/) with PIL, an independent
encoder: every pixel format the decoder must handle, and every kind of bad file it must refuse.
Usage: python3 tests/data/make_fixtures.py"""
import io
import os
import struct
import zlib

from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'images')


def save(name, img, **kw):
    img.save(os.path.join(OUT, name), **kw)


def main():
    os.makedirs(OUT, exist_ok=True)
    # 4x3 RGB with known pixels: left half red (200, 10, 20), right half blue (5, 40, 250).
    rgb = Image.new('RGB', (4, 3))
    for x in range(4):
        for y in range(3):
            rgb.putpixel((x, y), (200, 10, 20) if x < 2 else (5, 40, 250))
    save('rgb.png', rgb)
    save('rgb.webp', rgb, lossless=True)
    big = rgb.resize((64, 48), Image.NEAREST)
    save('rgb.jpg', big, quality=95)
    save('grey.png', Image.new('L', (5, 4), 77))
    la = Image.new('LA', (2, 2), (100, 255))
    la.putpixel((1, 1), (100, 0))  # fully transparent -> white
    save('grey_alpha.png', la)
    rgba = Image.new('RGBA', (2, 1), (0, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half transparent black on white -> 127
    save('rgba.png', rgba)
    pal = Image.new('P', (3, 1))
    pal.putpalette([10, 20, 30, 200, 100, 50] + [0] * (254 * 3))
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.putpixel((2, 0), 1)
    save('palette.png', pal)
    deep = Image.new('I;16', (2, 2), 65535)
    deep.putpixel((0, 0), 257 * 40)
    save('grey16.png', deep)
    # Bad files.
    open(os.path.join(OUT, 'empty.jpg'), 'wb').close()
    with open(os.path.join(OUT, 'page.jpg'), 'w') as f:
        f.write('<!DOCTYPE html><html><body>404 Not Found</body></html>\n')
    data = open(os.path.join(OUT, 'rgb.jpg'), 'rb').read()
    with open(os.path.join(OUT, 'truncated.jpg'), 'wb') as f:
        f.write(data[: len(data) // 2])
    png = open(os.path.join(OUT, 'rgb.png'), 'rb').read()
    with open(os.path.join(OUT, 'truncated.png'), 'wb') as f:
        f.write(png[: len(png) - 20])
    # A valid PNG header declaring 100000 x 100000 pixels (a decompression bomb's calling card).
    ihdr = struct.pack('>IIBBBBB', 100000, 100000, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    with open(os.path.join(OUT, 'bomb.png'), 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 1000)) +
                chunk(b'IEND', b''))
    print(f'wrote fixtures to {OUT}')


if __name__ == '__main__':
    main()
