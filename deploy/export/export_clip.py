#!/usr/bin/env python3
"""Export a CLIP model's image and text towers to ONNX files lemon can run.

    export_clip.py --checkpoint ViT-B-32.pt            --out DIR [--opset 17] [--fp16]
    export_clip.py --open-clip-state-dict model.bin    --out DIR [--act gelu] ...
    export_clip.py --random tiny --seed 7              --out DIR

writes

    DIR/image.onnx   pixel_values float32 [batch,3,S,S] -> image_embeds float32 [batch,D]
    DIR/text.onnx    input_ids    int64   [batch,77]    -> text_embeds  float32 [batch,D]
    DIR/export.json  what was exported, from what (read by reference_embed.py)
    DIR/weights.pt   the exported float32 state dict (with --random, or --save-weights)

The embeddings are UNNORMALISED, exactly what CLIP's encode_image and
encode_text return (lemon L2-normalises them itself). The batch axis is
dynamic. Pixels are CLIP-preprocessed (resize shorter side to S bicubic,
centre crop, /255, normalise with CLIP's mean/std), which lemon does in Go;
token ids are OpenAI's BPE ids (start 49406, end 49407, zero padding), the
end-of-text token being the largest id of each row, where the text tower
takes its features (argmax), as OpenAI's encode_text does.

--fp16 converts each float32 graph to float16 (weights and arithmetic; the
LayerNorms stay float32, as in OpenAI's fp16 model) while keeping the float32
input and output, so lemon runs either file the same way. fp16 is for GPUs;
on a CPU it is slower than float32.

Needs torch (any 1.13+; Debian 12: python3-torch), onnx (python3-onnx) and
numpy. Runs on the CPU. Only ViT backbones; see README.md.
"""
import argparse
import inspect
import json
import os
import sys
import time
import warnings
from collections import defaultdict

import numpy as np
import torch
from torch import nn

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_model  # noqa: E402

SOT, EOT = 49406, 49407


class ImageTower(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values):
        return self.clip.encode_image(pixel_values).float()


class TextTower(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids):
        return self.clip.encode_text(input_ids).float()


# ---------------------------------------------------------------------------
# Loading


def read_state_dict(path):
    """A state dict from an OpenAI JIT archive (ViT-B-32.pt), a plain
    torch.save'd state dict (OpenCLIP's open_clip_pytorch_model.bin, or a
    training checkpoint {"state_dict": ...} with "module." prefixes) or a
    .safetensors file."""
    if path.endswith(".safetensors"):
        try:
            from safetensors.torch import load_file
        except ImportError:
            sys.exit(f"{path}: reading .safetensors needs the safetensors package (or convert it with torch.save)")
        sd = load_file(path, device="cpu")
    else:
        try:
            # OpenAI's released checkpoints are TorchScript archives.
            sd = torch.jit.load(path, map_location="cpu").state_dict()
        except Exception:  # not TorchScript: a pickled state dict
            sd = torch.load(path, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        sys.exit(f"{path}: not a state dict (got {type(sd).__name__})")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_model(source, path_or_arch, seed=0, act="quickgelu", vision_heads=None, text_heads=None):
    """The float32 model for a source recorded in export.json."""
    if source == "random":
        return clip_model.random_model(path_or_arch, seed, act=act)
    if source in ("checkpoint", "open-clip-state-dict", "weights"):
        sd = read_state_dict(path_or_arch)
        try:
            return clip_model.build_model(sd, act=act, vision_heads=vision_heads, text_heads=text_heads)
        except (RuntimeError, ValueError, NotImplementedError) as e:
            sys.exit(f"{path_or_arch}: cannot build a CLIP ViT from this state dict: {e}")
    raise ValueError(f"unknown source {source!r}")


def load_from_manifest(export_dir):
    """The float32 model an export directory was made from (for checking it)."""
    with open(os.path.join(export_dir, "export.json")) as f:
        m = json.load(f)
    src = m["source"]
    if m.get("weights"):
        return load_model("weights", os.path.join(export_dir, m["weights"]), act=m["act"],
                          vision_heads=m["vision_heads"], text_heads=m["text_heads"]), m
    return load_model(src["kind"], src.get("path") or src.get("arch"), seed=src.get("seed", 0), act=m["act"],
                      vision_heads=m["vision_heads"], text_heads=m["text_heads"]), m


# ---------------------------------------------------------------------------
# Export


def onnx_export(module, args, path, input_name, output_name, opset):
    kw = dict(
        input_names=[input_name],
        output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
        opset_version=opset,
        do_constant_folding=True,
        export_params=True,
    )
    # torch >= 2.5 also has the dynamo exporter (the default from 2.9); this
    # recipe is written for, and checked with, the TorchScript one.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kw["dynamo"] = False
    with torch.no_grad(), warnings.catch_warnings():
        # encode_text's x[arange(batch), argmax(ids)] exports as Gather over
        # a flattened view, which torch warns is wrong for negative indices;
        # these indices are never negative.
        warnings.filterwarnings("ignore", message=".*advanced indexing.*")
        torch.onnx.export(module, args, path, **kw)


def to_fp16(model, keep_fp32_ops=("LayerNormalization",)):
    """Converts a float32 ONNX model to float16 in place: float initializers,
    constants and casts become float16; the graph's float32 inputs and
    outputs stay float32 behind Cast nodes; ops in keep_fp32_ops compute in
    float32 (their float32-only initializers are left as they are)."""
    from onnx import TensorProto, helper, numpy_helper

    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    g = model.graph
    consumers = defaultdict(list)
    for n in g.node:
        for a in n.attribute:
            if a.type in (onnx_attr("GRAPH"), onnx_attr("GRAPHS")):
                raise NotImplementedError(f"to_fp16: node {n.name} ({n.op_type}) has a subgraph")
        for name in n.input:
            consumers[name].append(n)

    def tensor16(t):
        arr = numpy_helper.to_array(t)
        big = np.isfinite(arr) & (np.abs(arr) > 65504)
        if big.any():
            # Mask fill values (float32 min) rightly become -inf; say so in case
            # it is something else.
            print(f"to_fp16: {big.sum()} values of {t.name or 'a constant'} are beyond float16's range and become +-inf",
                  file=sys.stderr)
        with np.errstate(over="ignore"):
            return numpy_helper.from_array(arr.astype(np.float16), t.name)

    keep32 = set()
    for init in g.initializer:
        cs = consumers.get(init.name, [])
        if init.data_type == F32 and cs and all(c.op_type in keep_fp32_ops for c in cs):
            keep32.add(init.name)
        elif init.data_type == F32:
            init.CopyFrom(tensor16(init))

    head, body, tail = [], [], []
    rename = {}
    for inp in g.input:
        if inp.type.tensor_type.elem_type == F32 and inp.name not in {i.name for i in g.initializer}:
            rename[inp.name] = inp.name + "_fp16"
            head.append(helper.make_node("Cast", [inp.name], [rename[inp.name]], to=F16, name=inp.name + "_to_fp16"))
    outs = {o.name for o in g.output if o.type.tensor_type.elem_type == F32}
    for o in outs:
        rename[o] = o + "_fp16"
        tail.append(helper.make_node("Cast", [rename[o]], [o], to=F32, name=o + "_to_fp32"))

    for n in g.node:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
        for i, name in enumerate(n.output):
            if name in rename:
                n.output[i] = rename[name]
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == F32:
                a.i = F16
            if a.type == onnx_attr("TENSOR") and a.t.data_type == F32:
                a.t.CopyFrom(tensor16(a.t))
        if n.op_type in keep_fp32_ops:
            pre = []
            for i, name in enumerate(n.input):
                if name and name not in keep32:
                    cast = f"{n.name or n.output[0]}_in{i}_fp32"
                    pre.append(helper.make_node("Cast", [name], [cast], to=F32, name=cast))
                    n.input[i] = cast
            y = n.output[0]
            n.output[0] = y + "_fp32"
            body.extend(pre)
            body.append(n)
            body.append(helper.make_node("Cast", [y + "_fp32"], [y], to=F16, name=y + "_to_fp16"))
        else:
            body.append(n)

    del g.node[:]
    g.node.extend(head + body + tail)
    del g.value_info[:]  # stale types; runtimes infer them again
    return model


def onnx_attr(name):
    from onnx import AttributeProto
    return getattr(AttributeProto, name)


def describe_io(v):
    from onnx import TensorProto
    tt = v.type.tensor_type
    dims = ",".join(d.dim_param if d.dim_param else str(d.dim_value) for d in tt.shape.dim)
    dtype = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16", TensorProto.INT64: "int64"}.get(
        tt.elem_type, TensorProto.DataType.Name(tt.elem_type).lower())
    return f"{v.name} {dtype} [{dims}]"


def type_check(m):
    """Strict ONNX shape and type inference over a graph whose float16
    conversion must be consistent. Large initializers are turned into typed
    graph inputs first, so this costs little even for big models (the
    graph is modified: use it only for checking)."""
    import onnx
    from onnx import helper
    g = m.graph
    keep = []
    for init in g.initializer:
        if np.prod(init.dims, dtype=np.int64) > 1024:
            g.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            keep.append(init)
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)


def check(path, want_in, want_out, types):
    """onnx.checker plus lemon's interface: one input and one output with the
    expected names, a dynamic batch axis and a fixed embedding width. With
    types, also strict type inference (torch's exporter already did that for
    its own float32 graphs)."""
    import onnx
    onnx.checker.check_model(path)  # by path: also works beyond 2 GB
    m = onnx.load(path, load_external_data=False)
    inits = {x.name for x in m.graph.initializer}
    ins = [i for i in m.graph.input if i.name not in inits]
    outs = list(m.graph.output)
    names = ([i.name for i in ins], [o.name for o in outs])
    if names != ([want_in], [want_out]):
        raise SystemExit(f"{path}: inputs/outputs are {names}, want ([{want_in!r}], [{want_out!r}])")
    for v in ins + outs:
        d0 = v.type.tensor_type.shape.dim[0]
        if not d0.dim_param:
            raise SystemExit(f"{path}: {describe_io(v)} has a fixed batch axis")
    d = outs[0].type.tensor_type.shape.dim
    if len(d) != 2 or d[1].dim_value <= 0:
        raise SystemExit(f"{path}: output {describe_io(outs[0])} is not [batch,D] with D fixed")
    desc = describe_io(ins[0]), describe_io(outs[0]), m.opset_import[0].version
    if types:
        type_check(m)
    return desc


TWO_GB = 2 ** 31 - 1


def save(m, path):
    """Saves an ONNX model, its weights in PATH.data beside it when it is
    beyond protobuf's 2 GB limit."""
    import onnx
    data = os.path.basename(path) + ".data"
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")
    if m.ByteSize() > TWO_GB:
        onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location=data)
    else:
        onnx.save_model(m, path)


def export_tower(tower, example, out_dir, name, in_name, out_name, opset, fp16):
    """Exports one tower to out_dir/name. A model beyond 2 GB is written by
    torch as one file per tensor; it is gathered into name.data so that the
    two towers' weight files cannot collide."""
    import shutil
    import onnx
    tmp = os.path.join(out_dir, f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        p = os.path.join(tmp, name)
        onnx_export(tower, (example,), p, in_name, out_name, opset)
        dest = os.path.join(out_dir, name)
        if fp16 or len(os.listdir(tmp)) > 1:
            m = onnx.load(p)  # with any external data
            if fp16:
                to_fp16(m)
            save(m, dest)
        else:
            os.replace(p, dest)
            if os.path.exists(dest + ".data"):
                os.remove(dest + ".data")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="PATH.pt", help="OpenAI CLIP checkpoint (TorchScript archive, e.g. ViT-B-32.pt) or state dict")
    src.add_argument("--open-clip-state-dict", metavar="PATH", help="OpenCLIP state dict (open_clip_pytorch_model.bin, a training checkpoint or .safetensors)")
    src.add_argument("--random", metavar="ARCH", help="random weights for an architecture: " + ", ".join(clip_model.CONFIGS))
    ap.add_argument("--seed", type=int, default=0, help="seed for --random (default 0)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    ap.add_argument("--fp16", action="store_true", help="float16 weights and arithmetic, float32 input and output (GPU)")
    ap.add_argument("--act", choices=["quickgelu", "gelu"], default=None,
                    help="MLP activation: quickgelu (OpenAI's models, OpenCLIP *-quickgelu; the default for --checkpoint "
                         "and --random) or gelu (most OpenCLIP models); required with --open-clip-state-dict")
    ap.add_argument("--vision-heads", type=int, help="override the image tower's head count (default width/64, "
                                                      "16 for widths 1280/1408/1664/1792: OpenCLIP ViT-H/g/bigG/e-14)")
    ap.add_argument("--text-heads", type=int, help="override the text tower's head count (default width/64)")
    ap.add_argument("--save-weights", action="store_true", help="also write DIR/weights.pt (always with --random)")
    args = ap.parse_args()

    if args.open_clip_state_dict and not args.act:
        ap.error("--open-clip-state-dict needs --act (the weights do not say which): quickgelu for "
                 "pretrained='openai' and *-quickgelu models (also MetaCLIP, DFN), gelu for the others "
                 "(LAION, DataComp, ...): see the model's OpenCLIP config (quick_gelu)")
    t0 = time.time()
    torch.set_grad_enabled(False)
    act = args.act or "quickgelu"
    os.makedirs(args.out, exist_ok=True)
    if args.random:
        source = {"kind": "random", "arch": args.random, "seed": args.seed}
        model = load_model("random", args.random, seed=args.seed, act=act)
    elif args.checkpoint:
        source = {"kind": "checkpoint", "path": os.path.abspath(args.checkpoint)}
        model = load_model("checkpoint", args.checkpoint, act=act, vision_heads=args.vision_heads, text_heads=args.text_heads)
    else:
        source = {"kind": "open-clip-state-dict", "path": os.path.abspath(args.open_clip_state_dict)}
        model = load_model("open-clip-state-dict", args.open_clip_state_dict, act=act,
                           vision_heads=args.vision_heads, text_heads=args.text_heads)
    model = model.float().eval()

    v = model.visual
    size = v.input_resolution
    ctx = model.context_length
    dim = v.output_dim
    weights = None
    if args.random or args.save_weights:
        weights = "weights.pt"
        torch.save(model.state_dict(), os.path.join(args.out, weights))

    # Example inputs: two rows, ends of text at different places.
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, size, size, generator=g)
    ids = torch.zeros(2, ctx, dtype=torch.long)
    for r, n in enumerate((5, 11)):
        ids[r, 0] = SOT
        ids[r, 1:n] = torch.randint(1, SOT, (n - 1,), generator=g)
        ids[r, n] = EOT

    files = {}
    for name, tower, example, in_name, out_name in (
        ("image.onnx", ImageTower(model).eval(), pixels, "pixel_values", "image_embeds"),
        ("text.onnx", TextTower(model).eval(), ids, "input_ids", "text_embeds"),
    ):
        path = export_tower(tower, example, args.out, name, in_name, out_name, args.opset, args.fp16)
        nbytes = os.path.getsize(path) + (os.path.getsize(path + ".data") if os.path.exists(path + ".data") else 0)
        files[name] = check(path, in_name, out_name, types=args.fp16) + (nbytes,)

    manifest = {
        "source": source,
        "act": act,
        "vision_heads": v.transformer.resblocks[0].attn.num_heads,
        "text_heads": model.transformer.resblocks[0].attn.num_heads,
        "image_size": size,
        "context_length": ctx,
        "embed_dim": dim,
        "opset": args.opset,
        "fp16": args.fp16,
        "weights": weights,
        "torch": torch.__version__,
    }
    with open(os.path.join(args.out, "export.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")

    n_img = sum(p.numel() for p in v.parameters())
    n_txt = sum(p.numel() for p in model.parameters()) - n_img
    print(f"exported {source} ({'fp16' if args.fp16 else 'fp32'}, opset {args.opset}, torch {torch.__version__}) "
          f"in {time.time() - t0:.1f}s")
    print(f"  image tower: {n_img / 1e6:.1f}M params, {v.transformer.layers} layers, width {v.transformer.width}, "
          f"{manifest['vision_heads']} heads, patch {v.conv1.kernel_size[0]}, S={size}")
    print(f"  text tower:  {n_txt / 1e6:.1f}M params, {model.transformer.layers} layers, width {model.transformer.width}, "
          f"{manifest['text_heads']} heads, L={ctx}, vocab {model.vocab_size}, act {act}")
    for name, (i, o, opset, nbytes) in files.items():
        ext = f" + {name}.data" if os.path.exists(os.path.join(args.out, name + ".data")) else ""
        print(f"  {os.path.join(args.out, name)}{ext}: {i} -> {o} (opset {opset}, {nbytes / 1e6:.1f} MB, onnx.checker ok)")
    if weights:
        print(f"  {os.path.join(args.out, weights)}: float32 state dict")


if __name__ == "__main__":
    main()
