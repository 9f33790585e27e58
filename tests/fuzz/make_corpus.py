#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer harnesses (tests/fuzz/corpus/NAME/): a few small valid
files of each format and a few slightly broken ones. Standard library only; rerun after changing it.
Inputs a harness found that crashed the library are kept beside these as crash-*."""
import io
import json
import pathlib
import struct
import tarfile

ROOT = pathlib.Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"
CONFIGS = ROOT.parents[1] / "configs"


def write(name, files):
    d = CORPUS / name
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    for fname, data in files.items():
        (d / f"seed-{fname}").write_bytes(data.encode() if isinstance(data, str) else data)


def safetensors(tensors, metadata=None, pad=True, header=None):
    """tensors: [(name, dtype, shape, bytes)] in data order."""
    h, data = {}, b""
    if metadata:
        h["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = header if header is not None else json.dumps(h, separators=(",", ":"))
    if pad:
        text += " " * (-len(text) % 8)
    b = text.encode()
    return struct.pack("<Q", len(b)) + b + data


def safetensors_seeds():
    f32 = struct.pack("<4f", 1, 2, -0.5, 3.25)
    return {
        "f32.safetensors": safetensors([("w", "F32", [2, 2], f32)], {"format": "pt"}),
        "dtypes.safetensors": safetensors([
            ("a", "F16", [2], b"\x00\x3c\x00\xc0"), ("b", "BF16", [1], b"\x80\x3f"), ("c", "I64", [1], struct.pack("<q", -7)),
            ("d", "U8", [3], b"\x01\x02\x03"), ("e", "BOOL", [2], b"\x00\x01"), ("f", "F32", [0, 3], b""),
            ("g", "I32", [], struct.pack("<i", 5)), ("h", "F64", [1], struct.pack("<d", 1.5)), ("i", "I16", [1], b"\x01\x00"),
            ("j", "I8", [1], b"\xff")]),
        "unpadded.safetensors": safetensors([("x", "U8", [1], b"\x07"), ("y", "F32", [1], struct.pack("<f", 2))], pad=False),
        "escapes.safetensors": safetensors([("na\\u00efve \\\"q\\\"", "U8", [1], b"\x01")], {"k\\n": "v\\u2603"}),
        "bad-length.safetensors": struct.pack("<Q", 1 << 40) + b"{}",
        "bad-dtype.safetensors": safetensors([("w", "F8", [1], b"\x00")]),
        "bad-overlap.safetensors": safetensors([], header='{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
                                               '"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}') + b"abc",
        "bad-shape.safetensors": safetensors([], header='{"a":{"dtype":"F32","shape":[0,9223372036854775808],'
                                             '"data_offsets":[0,0]}}'),
        "bad-shape-product.safetensors": safetensors([], header='{"a":{"dtype":"U8","shape":[0,4611686018427387904,'
                                                     '4611686018427387904],"data_offsets":[0,0]}}'),
        "bad-escape.safetensors": safetensors([], header='{"\\uzz00":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}'),
        "bad-trailing.safetensors": safetensors([("w", "U8", [1], b"\x01")]) + b"extra",
    }


def pack(n=2, h=2, w=2, captions=("a cat", "a dog"), offsets=None, channels=3, fmt="torchclip-pack-v1"):
    caps = b"".join(c.encode() for c in captions)
    if offsets is None:
        offsets = [0]
        for c in captions:
            offsets.append(offsets[-1] + len(c.encode()))
    return safetensors([
        ("images", "U8", [n, h, w, channels], bytes(range(n * h * w * channels))),
        ("caption_bytes", "U8", [len(caps)], caps),
        ("caption_offsets", "I64", [len(offsets)], struct.pack(f"<{len(offsets)}q", *offsets)),
        ("labels", "I64", [n], struct.pack(f"<{n}q", *range(n))),
    ], {"format": fmt} if fmt else None)


def pack_seeds():
    return {
        "pack.safetensors": pack(),
        "empty.safetensors": pack(n=0, captions=()),
        "bad-offsets.safetensors": pack(offsets=[0, 6, 2]),
        "bad-channels.safetensors": pack(channels=1),
        "bad-format.safetensors": pack(fmt="torchclip-index-v1"),
    }


def tar(members, fmt=tarfile.USTAR_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    b = buf.getvalue().rstrip(b"\0")
    return b + b"\0" * (-len(b) % 512 + 1024)  # the end-of-archive blocks, not tarfile's 10 KiB record


def tar_seeds():
    jpg = b"\xff\xd8\xff\xe0fakejpeg\xff\xd9"
    sample = [("s0.jpg", jpg), ("s0.txt", b"a photo"), ("s0.cls", b"3"), ("s1.png", jpg), ("s1.txt", b"two")]
    ok = tar(sample)
    long_name = "d/" + "x" * 120 + ".txt"
    return {
        "shard.tar": ok,
        "dirs.tar": tar([("d", None), ("d/k.jpg", jpg), ("d/k.txt", b"cap"), (".txt", b"nokey"), ("d/k2.TXT", b" ")]),
        "gnu-long.tar": tar([(long_name, b"long"), ("d/" + "x" * 120 + ".jpg", jpg)], fmt=tarfile.GNU_FORMAT),
        "pax.tar": tar([("p/" + "y" * 110 + ".txt", b"pax"), ("caf\u00e9.txt", b"utf8")], fmt=tarfile.PAX_FORMAT),
        "truncated.tar": ok[: 512 + 100],
        "no-end.tar": ok[:-1024],
        "bad-size.tar": ok[:124] + b"77777777777\0" + ok[136:],
    }


def csv_seeds():
    return {
        "ok.csv": "filepath,title,label\na.jpg,a cat,0\n/abs/b.png,\"a \"\"quoted\"\", dog\",1\n",
        "ok.tsv": "filepath\ttitle\tlabel\r\nimgs/a.jpg\ta cat\t2\r\n\r\nb.jpg\t\"multi\nline\"\t3",
        "bom.csv": "\ufefffilepath,title\na.jpg,x\n",
        "bad-rows.csv": "title,filepath,label\nonly\n,  ,\nc.jpg,cap,1x\nd.jpg,cap,99999999999999999999\n",
        "no-column.csv": "path,caption\na.jpg,x\n",
        "unterminated.csv": "filepath,title\n\"a.jpg,never closed\n",
        "both-separators.csv": "filepath,\"ti\tx\"\ttitle\na,b\tc\n",
    }


def config_seeds():
    s = {f"model-{p.stem}.yaml": p.read_text() for p in sorted((CONFIGS / "models").glob("*.yaml"))
         if p.stem in ("tiny", "RN50")}
    s.update({f"train-{p.stem}.yaml": p.read_text() for p in sorted((CONFIGS / "train").glob("*.yaml"))})
    s["train-inline.yaml"] = (
        "#set optim.lr=1e-3\n#set train.steps=5\nmodel:\n  embed_dim: 32\n  vision_cfg: {image_size: 32, patch_size: 8, "
        "layers: [3, 4, 6, 3], width: 64, head_width: 32}\n  text_cfg: {context_length: 8, vocab_size: 100, width: 32, "
        "heads: 2, layers: 1}\ndata:\n  train: synthetic:10\n  scale: [0.5, 1.0]\n  csv_separator: \"\\\\t\"\nloss:\n"
        "  name: siglip\ntrain:\n  device: cuda:1\n  epochs: 1\n")
    s["bad-keys.yaml"] = "model: tiny\ndata:\n  train: x.csv\n  train: y.csv\nbogus: 1\n"
    s["bad-values.yaml"] = "embed_dim: 016\nvision_cfg:\n  layers: [1, 2]\n  width: 1e12\ntext_cfg: {heads: 0x10}\n"
    s["bad-yaml.yaml"] = "model: tiny\ndata: [train: {x\n  - &a *a\n"
    s["long-model-path.yaml"] = "model: /" + "x" * 300 + "\n"
    s["anchors.yaml"] = "base: &b {lr: 1.0}\noptim: *b\nmodel: tiny\n? [a, b]\n: 1\n"
    return s


def bpe_seeds():
    return {
        "plain.txt": "a photo of a cat.",
        "html.txt": "caf&eacute; &amp;lt;b&gt; &#x1F600; &#0; &notit; fi&#64257;",
        "unicode.txt": "Stra\u00dfe \u0130stanbul \u03a3\u0399\u03a3 \uff21\uff22 \u65e5\u672c\u8a9e \U0001f408 e\u0301",
        "markers.txt": "<start_of_text>it's we'll THEY'RE I'D<end_of_text> 12345 ...!!!",
        "controls.txt": "\x1b[31mred\x1b[0m\r\n\t\x85\u2028tab\u00a0x",
        "invalid.txt": b"\xff\xfe\xc0\xafab\xe2\x82\xed\xa0\x80\xf4\x90\x80\x80z",
    }


def json_seeds():
    return {
        "search.json": '{"query": "a photo of a dog", "k": 10}',
        "queries.json": '{"queries": ["a cat", "caf\\u00e9 \\ud83d\\ude00", "tab\\there"], "k": 3}',
        "embeddings.json": '{"input": ["x", {"image": "aGVsbG8="}], "model": "m", "encoding_format": "base64"}',
        "numbers.json": '[0, -0, 1.5e-3, -2E+10, 123456789012345678901234567890, 0.1]',
        "nested.json": '{"a": {"b": [[], {}, [null, true, false]]}, "c": ""}',
        "raw-utf8.json": "\"Stra\u00dfe \u65e5\u672c \U0001f408\"",
        "bad.json": b'{"a": 1, "a": [1, 2,], "b": "\xc3"}',
    }


def main():
    write("safetensors", safetensors_seeds())
    write("pack", pack_seeds())
    write("tar", tar_seeds())
    write("csv", csv_seeds())
    write("config", config_seeds())
    write("bpe", bpe_seeds())
    write("json", json_seeds())
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"{CORPUS}: {sum(1 for p in CORPUS.rglob('*') if p.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()
