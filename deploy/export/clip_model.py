"""OpenAI CLIP's ViT architecture, for exporting CLIP encoders to ONNX.

The modules below follow openai/CLIP clip/model.py (MIT License, Copyright (c)
2021 OpenAI) with the same parameter names, so the state dict of a released
checkpoint loads with strict=True:

    torch.jit.load("ViT-B-32.pt", map_location="cpu").state_dict()

and so does an OpenCLIP state dict of the standard `CLIP` class (OpenCLIP keeps
OpenAI's names: visual.conv1.weight, visual.transformer.resblocks.N.attn.
in_proj_weight, token_embedding.weight, text_projection, ...).

Differences from clip/model.py, none of which changes a single output value:

  * only the ViT visual backbone; the modified-ResNet ones (RN50, RN101,
    RN50x4, ...) are not implemented;
  * the activation is selectable: OpenAI's models and OpenCLIP's "-quickgelu"
    ones use QuickGELU (x * sigmoid(1.702 x)); most OpenCLIP models trained
    by LAION use exact GELU (nn.GELU), which the state dict cannot tell;
  * head counts may be overridden, and infer_config knows the image-tower
    head counts of OpenCLIP's ViT-H/g/bigG/e-14 (OpenAI's build_model
    assumes width / 64, wrong for those), and the MLP width is read from
    the weights (4 x width in OpenAI's models, not in ViT-g-14 and
    ViT-bigG-14);
  * the model is not converted to fp16 on load: it runs in float32 (as
    clip.load(..., device="cpu") does). export_clip.py makes fp16 ONNX
    files from the float32 graph.

Parameter initialisation follows CLIP.initialize_parameters, so random
models (export_clip.py --random ARCH --seed N) have realistic scales.
"""
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

# Named configurations: the CLIP(...) constructor arguments of OpenAI's
# released ViT models, and "tiny" (same architecture, small) for tests.
CONFIGS = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, context_length=77, vocab_size=49408,
                     transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=16, context_length=77, vocab_size=49408,
                     transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                     vision_patch_size=14, context_length=77, vocab_size=49408,
                     transformer_width=768, transformer_heads=12, transformer_layers=12),
    "ViT-L/14@336px": dict(embed_dim=768, image_resolution=336, vision_layers=24, vision_width=1024,
                           vision_patch_size=14, context_length=77, vocab_size=49408,
                           transformer_width=768, transformer_heads=12, transformer_layers=12),
    # Real image size, patch grid and vocabulary (so preprocessing and
    # tokenization run exactly as for the released models), but 2 layers of
    # width 128 (2 heads) in each tower and 64-d embeddings.
    "tiny": dict(embed_dim=64, image_resolution=224, vision_layers=2, vision_width=128,
                 vision_patch_size=32, context_length=77, vocab_size=49408,
                 transformer_width=128, transformer_heads=2, transformer_layers=2),
}

# Accept OpenCLIP's spellings too (ViT-B-32 for ViT-B/32).
ALIASES = {name.replace("/", "-"): name for name in CONFIGS}
ALIASES["ViT-L-14-336"] = "ViT-L/14@336px"


def config(arch):
    """The constructor arguments of a named architecture."""
    name = ALIASES.get(arch, arch)
    if name not in CONFIGS:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(CONFIGS)}")
    return dict(CONFIGS[name])


class LayerNorm(nn.LayerNorm):
    """Subclass torch's LayerNorm to handle fp16 (computes in float32)."""

    def forward(self, x: torch.Tensor):
        orig_type = x.dtype
        ret = super().forward(x.type(torch.float32))
        return ret.type(orig_type)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor):
        return x * torch.sigmoid(1.702 * x)


def _activation(act):
    if act == "quickgelu":
        return QuickGELU()
    if act == "gelu":
        return nn.GELU()
    raise ValueError(f"unknown activation {act!r} (want quickgelu or gelu)")


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model: int, n_head: int, attn_mask: torch.Tensor = None, act: str = "quickgelu",
                 mlp_width: int = None):
        super().__init__()
        mlp_width = mlp_width or d_model * 4

        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(d_model, mlp_width)),
            ("gelu", _activation(act)),
            ("c_proj", nn.Linear(mlp_width, d_model)),
        ]))
        self.ln_2 = LayerNorm(d_model)
        # A plain attribute, as in OpenAI's code: not part of the state dict.
        self.attn_mask = attn_mask

    def attention(self, x: torch.Tensor):
        self.attn_mask = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        return self.attn(x, x, x, need_weights=False, attn_mask=self.attn_mask)[0]

    def forward(self, x: torch.Tensor):
        x = x + self.attention(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, attn_mask: torch.Tensor = None, act: str = "quickgelu",
                 mlp_width: int = None):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask, act, mlp_width) for _ in range(layers)])

    def forward(self, x: torch.Tensor):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, act: str = "quickgelu", mlp_width: int = None):
        super().__init__()
        self.input_resolution = input_resolution
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(in_channels=3, out_channels=width, kernel_size=patch_size, stride=patch_size, bias=False)

        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = LayerNorm(width)

        self.transformer = Transformer(width, layers, heads, act=act, mlp_width=mlp_width)

        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor):
        x = self.conv1(x)  # shape = [*, width, grid, grid]
        x = x.reshape(x.shape[0], x.shape[1], -1)  # shape = [*, width, grid ** 2]
        x = x.permute(0, 2, 1)  # shape = [*, grid ** 2, width]
        x = torch.cat([self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device), x], dim=1)  # shape = [*, grid ** 2 + 1, width]
        x = x + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)

        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD

        x = self.ln_post(x[:, 0, :])

        if self.proj is not None:
            x = x @ self.proj

        return x


class CLIP(nn.Module):
    def __init__(self,
                 embed_dim: int,
                 # vision
                 image_resolution: int,
                 vision_layers: int,
                 vision_width: int,
                 vision_patch_size: int,
                 # text
                 context_length: int,
                 vocab_size: int,
                 transformer_width: int,
                 transformer_heads: int,
                 transformer_layers: int,
                 # extensions (see the module comment)
                 vision_heads: int = None,
                 act: str = "quickgelu",
                 vision_mlp_width: int = None,
                 text_mlp_width: int = None,
                 ):
        super().__init__()

        self.context_length = context_length

        if isinstance(vision_layers, (tuple, list)):
            raise NotImplementedError("modified-ResNet CLIP backbones (RN50, RN101, RN50x4, ...) are not supported; export a ViT model")
        if vision_heads is None:
            vision_heads = vision_width // 64
        self.visual = VisionTransformer(
            input_resolution=image_resolution,
            patch_size=vision_patch_size,
            width=vision_width,
            layers=vision_layers,
            heads=vision_heads,
            output_dim=embed_dim,
            act=act,
            mlp_width=vision_mlp_width,
        )

        self.transformer = Transformer(
            width=transformer_width,
            layers=transformer_layers,
            heads=transformer_heads,
            attn_mask=self.build_attention_mask(),
            act=act,
            mlp_width=text_mlp_width,
        )

        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)

        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))

        self.initialize_parameters()

    def initialize_parameters(self):
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

        proj_std = (self.transformer.width ** -0.5) * ((2 * self.transformer.layers) ** -0.5)
        attn_std = self.transformer.width ** -0.5
        fc_std = (2 * self.transformer.width) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)

        if self.text_projection is not None:
            nn.init.normal_(self.text_projection, std=self.transformer.width ** -0.5)

    def build_attention_mask(self):
        # lazily create causal attention mask, with full attention between the vision tokens
        # pytorch uses additive attention mask; fill with -inf
        mask = torch.empty(self.context_length, self.context_length)
        mask.fill_(float("-inf"))
        mask.triu_(1)  # zero out the lower diagonal
        return mask

    @property
    def dtype(self):
        return self.visual.conv1.weight.dtype

    def encode_image(self, image):
        return self.visual(image.type(self.dtype))

    def encode_text(self, text):
        x = self.token_embedding(text).type(self.dtype)  # [batch_size, n_ctx, d_model]

        x = x + self.positional_embedding.type(self.dtype)
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.transformer(x)
        x = x.permute(1, 0, 2)  # LND -> NLD
        x = self.ln_final(x).type(self.dtype)

        # x.shape = [batch_size, n_ctx, transformer.width]
        # take features from the eot embedding (eot_token is the highest number in each sequence)
        x = x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

        return x

    def forward(self, image, text):
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)

        # normalized features
        image_features = image_features / image_features.norm(dim=1, keepdim=True)
        text_features = text_features / text_features.norm(dim=1, keepdim=True)

        # cosine similarity as logits
        logit_scale = self.logit_scale.exp()
        logits_per_image = logit_scale * image_features @ text_features.t()
        logits_per_text = logits_per_image.t()

        # shape = [global_batch_size, global_batch_size]
        return logits_per_image, logits_per_text


# Image-tower head counts of OpenCLIP configs whose head width is not 64
# (ViT-H-14: 1280/80, ViT-g-14: 1408/88, ViT-bigG-14: 1664/104,
# ViT-e-14: 1792/112). OpenAI's models all have head width 64.
VISION_HEADS = {1280: 16, 1408: 16, 1664: 16, 1792: 16}

# Entries of OpenAI's JIT checkpoints that are not parameters.
_NON_PARAMETERS = ("input_resolution", "context_length", "vocab_size")


def infer_config(state_dict):
    """CLIP(...) arguments from a state dict's shapes, as OpenAI's build_model
    infers them (ViT backbones only)."""
    if "visual.proj" not in state_dict:
        if any(k.startswith("visual.layer1.") for k in state_dict):
            raise NotImplementedError("this is a modified-ResNet CLIP (RN50, RN101, ...); only ViT backbones are supported")
        if any(k.startswith("text.") for k in state_dict) or any(k.startswith("visual.trunk.") for k in state_dict):
            raise NotImplementedError("this is an OpenCLIP CustomTextCLIP / timm-backbone model; only the standard CLIP layout is supported")
        raise ValueError("not a CLIP ViT state dict: no visual.proj (keys start with %s)"
                         % ", ".join(sorted({k.split(".")[0] for k in state_dict})[:8]))
    vision_width = state_dict["visual.conv1.weight"].shape[0]
    vision_layers = len([k for k in state_dict.keys() if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
    vision_patch_size = state_dict["visual.conv1.weight"].shape[-1]
    grid_size = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    image_resolution = vision_patch_size * grid_size

    embed_dim = state_dict["text_projection"].shape[1]
    context_length = state_dict["positional_embedding"].shape[0]
    vocab_size = state_dict["token_embedding.weight"].shape[0]
    transformer_width = state_dict["ln_final.weight"].shape[0]
    transformer_heads = transformer_width // 64
    transformer_layers = len(set(k.split(".")[2] for k in state_dict if k.startswith("transformer.resblocks")))

    # Extensions for OpenCLIP's larger models: MLP widths other than 4x
    # (ViT-g-14, ViT-bigG-14) are read from the weights; head counts cannot
    # be, so widths whose OpenCLIP config has a head width other than 64 get
    # theirs from VISION_HEADS.
    vision_mlp_width = state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    text_mlp_width = state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    vision_heads = VISION_HEADS.get(vision_width, vision_width // 64)

    return dict(embed_dim=embed_dim, image_resolution=image_resolution, vision_layers=vision_layers,
                vision_width=vision_width, vision_patch_size=vision_patch_size, context_length=context_length,
                vocab_size=vocab_size, transformer_width=transformer_width, transformer_heads=transformer_heads,
                transformer_layers=transformer_layers, vision_heads=vision_heads,
                vision_mlp_width=vision_mlp_width, text_mlp_width=text_mlp_width)


def build_model(state_dict, act="quickgelu", vision_heads=None, text_heads=None):
    """Builds a float32 CLIP from a state dict (OpenAI's or OpenCLIP's), loading
    it with strict=True. The config is inferred from the shapes (infer_config);
    vision_heads and text_heads override the head counts. Neither the head
    counts nor the activation can be checked against the weights: a wrong one
    loads fine and gives wrong embeddings."""
    state_dict = {k: v for k, v in state_dict.items() if k not in _NON_PARAMETERS}
    cfg = infer_config(state_dict)
    if text_heads:
        cfg["transformer_heads"] = text_heads
    if vision_heads:
        cfg["vision_heads"] = vision_heads
    for name, width, heads in (("image", cfg["vision_width"], cfg["vision_heads"]),
                               ("text", cfg["transformer_width"], cfg["transformer_heads"])):
        if width % heads:
            raise ValueError(f"{name} tower: width {width} is not divisible by {heads} heads")
    model = CLIP(**cfg, act=act)
    model.load_state_dict(state_dict, strict=True)  # copies fp16 weights into the float32 model
    return model.eval()


def random_model(arch, seed, act="quickgelu"):
    """A randomly initialised float32 CLIP of a named architecture."""
    torch.manual_seed(seed)
    return CLIP(**config(arch), act=act).eval()
