#!/usr/bin/env python3
"""Reference CLIP preprocessing with Pillow + numpy, for imageprep's tests.

Reproduces openai/CLIP clip.py's _transform exactly as torchvision runs it on
a PIL image (torchvision itself is not needed):

    Resize(size, BICUBIC)   shorter side -> size, longer -> int(size*long/short)
                            (torchvision truncates), via PIL Image.resize(BICUBIC)
                            (so mode "P"/"1" images resize NEAREST and RGBA/LA
                            resize premultiplied, as Pillow does)
    CenterCrop(size)        top = int(round((h - size) / 2.0)), same for left
    convert("RGB")
    ToTensor()              float32(uint8) / 255
    Normalize(mean, std)    (x - mean) / std in float32

One deliberate deviation, mirrored by the Go code: 16-bit grayscale images
(PIL mode "I"/"I;16") are first scaled to 8 bits (v >> 8). Pillow's own
I -> RGB conversion clips every value above 255 to white, which would turn a
16-bit photo into a white page.

Usage: reference.py --out DIR [--size 224] [--exif-transpose] [--decoded] FILE...

For the i-th FILE it writes DIR/i.u8 (the cropped RGB image, uint8 HWC) and
DIR/i.f32 (the normalised tensor, little-endian float32 CHW), with --decoded
also DIR/i.dec (the full decoded image as convert("RGB"), uint8 HWC, before
resizing), and prints one JSON line {"i", "file", "mode", "size", "error"}
per file to stdout.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageOps

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def preprocess(im, size):
    if im.mode in ("I", "I;16", "I;16B", "I;16L"):
        a = np.asarray(im).astype(np.int64) >> 8
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    w, h = im.size
    short, long = (w, h) if w <= h else (h, w)
    if short != size:
        new_short, new_long = size, int(size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        im = im.resize((new_w, new_h), Image.BICUBIC)
    w, h = im.size
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    im = im.crop((left, top, left + size, top + size))
    im = im.convert("RGB")
    u8 = np.asarray(im, dtype=np.uint8)
    x = u8.astype(np.float32) / np.float32(255)
    x = (x - MEAN) / STD
    return u8, np.ascontiguousarray(x.transpose(2, 0, 1), dtype="<f4")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--exif-transpose", action="store_true")
    ap.add_argument("--decoded", action="store_true")
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for i, f in enumerate(args.files):
        rec = {"i": i, "file": f, "mode": None, "size": None, "error": None}
        try:
            im = Image.open(f)
            rec["mode"], rec["size"] = im.mode, list(im.size)
            if args.exif_transpose:
                im = ImageOps.exif_transpose(im)
            if args.decoded:
                with open(os.path.join(args.out, f"{i}.dec"), "wb") as fh:
                    fh.write(np.asarray(im.convert("RGB"), dtype=np.uint8).tobytes())
            u8, t = preprocess(im, args.size)
            with open(os.path.join(args.out, f"{i}.u8"), "wb") as fh:
                fh.write(u8.tobytes())
            with open(os.path.join(args.out, f"{i}.f32"), "wb") as fh:
                fh.write(t.tobytes())
        except Exception as e:  # reported per file; the Go test decides
            rec["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(rec))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
