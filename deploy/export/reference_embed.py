#!/usr/bin/env python3
"""Reference CLIP embeddings from the PyTorch model an export was made from.

    reference_embed.py --export-dir DIR --captions CAPTIONS.json --out OUT.json IMAGE...

DIR is an export_clip.py output directory: its export.json says where the
float32 weights are (DIR/weights.pt, or the original checkpoint). The images
are preprocessed with Pillow + numpy exactly as CLIP's own transform does
(embed/imageprep/testdata/reference.py: resize the shorter side to S with
PIL BICUBIC, centre crop, RGB, /255, normalise with CLIP's mean and std) and
the captions (a JSON list of strings) are tokenized with OpenAI's
SimpleTokenizer (embed/tokenizer/testdata/py_reference.py; start token, BPE
ids, end token, zero padding to 77, too long texts truncated keeping the end
token: clip.tokenize(truncate=True)). Both helpers are imported from the
repository, so this reference is the one lemon's unit tests check against.

OUT.json:

    {"image_size": S, "embed_dim": D,
     "images":   [{"file": ..., "embedding": [D floats]}, ...],
     "captions": [{"text": ..., "ids": [77 ints], "embedding": [D floats]}, ...]}

Embeddings are unnormalised, as encode_image / encode_text return them.
The Go test embed/equivalence compares lemon's ONNX Runtime embeddings of
the same inputs with these; you can run it on your own export (see README.md).

Needs torch, numpy, Pillow and regex (Debian: python3-torch python3-numpy
python3-pil python3-regex).
"""
import argparse
import importlib.util
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, HERE)
import export_clip  # noqa: E402


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def default_vocab():
    p = os.environ.get("LEMON_CLIP_VOCAB")
    if p:
        return p
    for name in ("bpe_simple_vocab_16e6.txt.gz", "bpe_simple_vocab_16e6.txt"):
        p = os.path.join(REPO, "third_party", "clip-vocab", name)
        if os.path.exists(p):
            return p
    sys.exit("no CLIP vocabulary: run scripts/fetch-clip-vocab.sh or pass --vocab")


def tokenize(tok, texts, context_length):
    """clip.tokenize(texts, context_length, truncate=True)."""
    sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
    out = np.zeros((len(texts), context_length), dtype=np.int64)
    for i, text in enumerate(texts):
        ids = [sot] + tok.encode(text) + [eot]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = eot
        out[i, :len(ids)] = ids
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--export-dir", required=True)
    ap.add_argument("--captions", required=True, help="JSON file: a list of strings")
    ap.add_argument("--out", required=True)
    ap.add_argument("--vocab", help="CLIP BPE merges (default: $LEMON_CLIP_VOCAB or third_party/clip-vocab)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("images", nargs="*")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    model, manifest = export_clip.load_from_manifest(args.export_dir)
    model = model.float().eval()
    size = manifest["image_size"]
    ctx = manifest["context_length"]

    prep = load_module("imageprep_reference", os.path.join(REPO, "embed", "imageprep", "testdata", "reference.py"))
    tokmod = load_module("py_reference", os.path.join(REPO, "embed", "tokenizer", "testdata", "py_reference.py"))
    tok = tokmod.SimpleTokenizer(args.vocab or default_vocab())
    from PIL import Image

    with open(args.captions) as f:
        captions = json.load(f)

    pixels = []
    for path in args.images:
        with Image.open(path) as im:
            _, chw = prep.preprocess(im, size)
        pixels.append(chw)
    image_embs = []
    for lo in range(0, len(pixels), args.batch_size):
        x = torch.from_numpy(np.stack(pixels[lo:lo + args.batch_size]))
        image_embs.append(model.encode_image(x).float().numpy())

    ids = tokenize(tok, captions, ctx)
    text_embs = []
    for lo in range(0, len(captions), args.batch_size):
        text_embs.append(model.encode_text(torch.from_numpy(ids[lo:lo + args.batch_size])).float().numpy())

    image_embs = np.concatenate(image_embs) if image_embs else np.zeros((0, manifest["embed_dim"]))
    text_embs = np.concatenate(text_embs) if text_embs else np.zeros((0, manifest["embed_dim"]))
    out = {
        "image_size": size,
        "embed_dim": manifest["embed_dim"],
        "images": [{"file": p, "embedding": e.astype(float).tolist()} for p, e in zip(args.images, image_embs)],
        "captions": [{"text": t, "ids": r.tolist(), "embedding": e.astype(float).tolist()}
                     for t, r, e in zip(captions, ids, text_embs)],
    }
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
