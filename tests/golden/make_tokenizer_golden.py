#!/usr/bin/env python3
"""Writes the CLIP BPE parity fixtures: tests/golden/tokenizer/clip_bpe.inp (one text per line)
and clip_bpe.out (open_clip's 77 ids for it, space-separated).

The texts are varied on purpose: captions, contractions, numbers, scripts with combining marks,
decomposed and precomposed forms, Greek final sigma, emoji sequences, full-width forms,
ligatures, curly quotes, HTML entities, control characters, ANSI escapes, odd whitespace,
special-token strings, very long texts, and random code points from many blocks.

torchclip implements ftfy.fix_text except its fix_encoding step (mojibake repair by re-decoding).
A text on which that step changes ftfy's output goes to clip_bpe_mojibake.inp instead, with the
ids open_clip gives when ftfy skips fix_encoding (clip_bpe_mojibake.out), so the difference stays
visible, counted and tested rather than hidden.

Line format of .inp: the text with '\\' as '\\\\', and every control, line or paragraph separator
character as '\\u{HEX}'. Usage: make_tokenizer_golden.py [--check]
"""
import argparse
import os
import random
import sys

import ftfy
import open_clip

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tokenizer')


def escape(s):
    out = []
    for ch in s:
        cp = ord(ch)
        if ch == '\\':
            out.append('\\\\')
        elif cp < 0x20 or 0x7F <= cp <= 0x9F or cp in (0x2028, 0x2029):
            out.append('\\u{%X}' % cp)
        else:
            out.append(ch)
    return ''.join(out)


WORDS = ['dog', 'cat', 'photo', 'sneaker', 'T-shirt', 'pullover', 'trouser', 'ankle boot', 'bag', 'red', 'a',
         'the', 'of', 'on', 'blurry', 'close-up', 'New York', 'Zürich', 'café', 'naïve', 'résumé']


def handmade():
    t = [
        '', ' ', '\t\n', 'a photo of a cat.', 'A PHOTO OF A DOG!', "it's a dog's life", "I'M HERE, YOU'RE THERE",
        "we'll've'd", "rock'n'roll", "''s", "!'s", "'S'T'RE'VE'M'LL'D", "o'clock", "don't", "can't won't",
        '3.14159 and 1,000,000 and 2nd 3rd', '½ ² ³ Ⅻ ⅻ ① ٣٤٥ ४२ 〇', '12345678901234567890',
        'Crème brûlée at the café', 'e\u0301le\u0300ve', 'Ångström Å Å', 'ΟΔΟΣ ΟΔΟΣ. ΣΑΣ Σ', 'ὈΔΥΣΣΕΎΣ',
        'İstanbul İİ', 'Straße STRASSE ß ẞ', 'Привет, мир', '中文 日本語の文章 한국어', '\u1100\u1161\u11a8 가각',
        'مرحبا بالعالم', 'नमस्ते दुनिया', 'สวัสดีครับ', '👍🏽 👨‍👩‍👧 🇯🇵 ❤️ 😀😀', 'ＬＯＵＤ　ＮＯＩＳＥＳ ｶﾀｶﾅ',
        'ﬁsh ﬂour ﬀ ĳ', '“quoted” ‘single’ ‚low‛', '&amp; &lt;b&gt; &#39; &#x1F600; &nbsp;x &AMP; &notit; &amp;amp;',
        '&EACUTE; &eacute &copy2023 &#0; &#128; &#x110000; &#xD800; &#65', '<b>&amp;</b> &lt;', 'a\x00b\x07c\x7fd',
        '\x1b[36;44mblue\x1b[0m text', 'line1\r\nline2\rline3\u2028line4\u2029line5\x85line6', 'a\u00a0b\u3000c\u2009d',
        '\x91quoted\x92 \x93double\x94 \x80 \x9f', '<start_of_text> <END_OF_TEXT> <start_of_text>x',
        '<ſtart_of_text>', 'ſ ſ\'ſ K', 'tab\tseparated\tvalues', '   leading and trailing   ', 'ǅ ǈ ǋ ǲ', 'ﬀ ﬃ ﬄ ﬅ ﬆ',
        'Ω ℃ ㎞ ㍻ ™ №', '\u0345 \u0399\u0345', 'é' * 10, 'word ' * 100, 'supercalifragilisticexpialidocious ' * 3,
        'http://example.com/path?query=1&x=2#frag', 'user@example.com', '#hashtag @mention $100 50% ~tilde',
        '...!!!???', '—–-‐', '«guillemets» ‹single›', '¡Hola! ¿Qué tal?', 'x' * 300, '🙂' * 60,
        'cafÃ©', 'The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.', 'Ã¼ber cool',
        'mixed\u200bzero\u200cwidth\u200djoiners\ufeffbom', '\ufff9annotated\ufffb\ufffc', '\U000e0067\U000e0062tags',
    ]
    return t


def random_text(rng):
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x206F), (0x2070, 0x218F),
              (0x2190, 0x2BFF), (0x3000, 0x30FF), (0x4E00, 0x4E80), (0xAC00, 0xAD00), (0xFB00, 0xFB4F),
              (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x10000, 0x1007F), (0x1D400, 0x1D7FF)]
    n = rng.randint(1, 40)
    out = []
    for _ in range(n):
        if rng.random() < 0.3:
            out.append(rng.choice([' ', ' ', "'", '&amp;', '&#233;', '\n', '\t', '.', ',', 'the ', 'Dog ']))
        else:
            lo, hi = rng.choice(blocks)
            out.append(chr(rng.randint(lo, hi)))
    return ''.join(out)


def captions(rng):
    templates = ['a photo of a {}.', 'a blurry photo of the {}', 'a close-up of a {} on a table', '{}s in a row!',
                 'My {} — taken in {}.', 'A {} and a {}, side by side']
    t = rng.choice(templates)
    return t.format(*[rng.choice(WORDS) for _ in range(t.count('{}'))])


def build():
    rng = random.Random(20261126)
    texts = handmade()
    texts += [captions(rng) for _ in range(400)]
    texts += [random_text(rng) for _ in range(700)]
    tok = open_clip.get_tokenizer('ViT-B-32')
    parity, mojibake = [], []
    for s in texts:
        if ftfy.fix_text(s) != ftfy.fix_text(s, fix_encoding=False):
            mojibake.append(s)
        else:
            parity.append(s)
    ids = tok(parity).tolist()
    # What open_clip gives when ftfy skips fix_encoding: the ids torchclip must give for these.
    real_fix_text = ftfy.fix_text
    open_clip.tokenizer.ftfy.fix_text = lambda t: real_fix_text(t, fix_encoding=False)
    try:
        mojibake_ids = tok(mojibake).tolist()
    finally:
        open_clip.tokenizer.ftfy.fix_text = real_fix_text
    return parity, ids, mojibake, mojibake_ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--check', action='store_true')
    args = ap.parse_args()
    parity, ids, mojibake, mojibake_ids = build()
    inp = ''.join(escape(s) + '\n' for s in parity)
    out = ''.join(' '.join(map(str, r)) + '\n' for r in ids)
    moj = ''.join(escape(s) + '\n' for s in mojibake)
    moj_out = ''.join(' '.join(map(str, r)) + '\n' for r in mojibake_ids)
    files = {'clip_bpe.inp': inp, 'clip_bpe.out': out, 'clip_bpe_mojibake.inp': moj, 'clip_bpe_mojibake.out': moj_out}
    if args.check:
        for name, text in files.items():
            with open(os.path.join(HERE, name), encoding='utf-8') as f:
                if f.read() != text:
                    print(f'{name} differs from what open_clip {open_clip.__version__} produces', file=sys.stderr)
                    sys.exit(1)
        print(f'tokenizer fixtures match open_clip ({len(parity)} texts, {len(mojibake)} mojibake texts)')
        return
    os.makedirs(HERE, exist_ok=True)
    for name, text in files.items():
        with open(os.path.join(HERE, name), 'w', encoding='utf-8') as f:
            f.write(text)
    print(f'wrote {len(parity)} parity texts and {len(mojibake)} mojibake texts to {HERE}')


if __name__ == '__main__':
    main()
