"""The team's in-house V2: a small single-stream fusion transformer.

[CLS] + image patches + caption words go through the same self-attention
layers (single stream); a linear head on [CLS] gives the image–text match
logit. Weights are seeded random ("the V2 checkpoint" of this example); a
real team puts its own module here and keeps the adapter around it.

Attention is computed by hand (no SDPA) so that each layer's probabilities
pass through ``attn_probs``, an identity module the adapter hooks.
"""
from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

PAD_ID, MASK_ID = 0, 1
N_SPECIAL = 2


@dataclass(frozen=True)
class V2Config:
    image_size: int = 32
    patch: int = 8
    vocab: int = 512               # hashed word buckets, plus the special ids
    max_len: int = 16
    dim: int = 32
    heads: int = 4
    layers: int = 2

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch) ** 2


class Attention(nn.Module):
    """Multi-head self-attention with its probabilities exposed as ``attn_probs`` (an identity to hook)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.attn_probs = nn.Identity()  # hook point: [B, H, S, S], rows sum to 1

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, S, D] -> [B, H, S, D/H]."""
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        q, k, v = map(self._heads, self.qkv(x).chunk(3, dim=-1))
        # padded keys get -inf before the softmax, so every row's mass stays on real tokens
        blocked = torch.zeros_like(key_padding, dtype=x.dtype).masked_fill(key_padding, float("-inf"))
        logits = torch.einsum("bhqd,bhkd->bhqk", q, k) * self.scale + blocked[:, None, None, :]
        probs = self.attn_probs(logits.softmax(-1))
        return self.out(torch.einsum("bhqk,bhkd->bhqd", probs, v).transpose(1, 2).flatten(2))


class Layer(nn.Module):
    """Pre-norm residual layer: attention, then a two-layer MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn_norm, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), key_padding)
        return x + self.mlp(x)


class InHouseV2(nn.Module):
    def __init__(self, config: V2Config = V2Config()):
        super().__init__()
        self.config = config
        d = config.dim
        self.patch_embed = nn.Linear(3 * config.patch**2, d)
        self.token_embed = nn.Embedding(config.vocab + N_SPECIAL, d)
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.pos = nn.Parameter(torch.randn(1, 1 + config.n_patches + config.max_len, d) * 0.02)
        self.layers = nn.ModuleList(Layer(d, config.heads) for _ in range(config.layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)

    def forward(self, patches: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        b = patches.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), self.patch_embed(patches), self.token_embed(token_ids)], 1)
        x = x + self.pos
        key_padding = torch.cat([torch.zeros(b, 1 + self.config.n_patches, dtype=torch.bool),
                                 token_ids == PAD_ID], 1)
        for layer in self.layers:
            x = layer(x, key_padding)
        return self.head(self.norm(x[:, 0])).squeeze(-1)


def build_model(seed: int = 0, config: V2Config = V2Config()) -> InHouseV2:
    """The V2 network with weights drawn from ``seed`` (identical for identical seeds)."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(seed)
        return InHouseV2(config).eval()


def save_checkpoint(path, seed: int = 0, config: V2Config = V2Config()) -> None:
    """Write a V2 checkpoint (state dict + config) — how this example's "weights" come to exist."""
    torch.save({"state_dict": build_model(seed, config).state_dict(), "config": asdict(config)}, path)


def load_checkpoint(path) -> InHouseV2:
    saved = torch.load(path, weights_only=True)
    net = InHouseV2(V2Config(**saved["config"]))
    net.load_state_dict(saved["state_dict"])
    return net.eval()


# --- inputs ---------------------------------------------------------------------

def patchify(images: list[Image.Image], config: V2Config) -> torch.Tensor:
    """[B, n_patches, 3·patch²], pixels scaled to [-1, 1] so the masked baseline 0 is mid-grey."""
    size, p = config.image_size, config.patch
    arrays = [np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32) / 127.5 - 1.0 for im in images]
    x = torch.from_numpy(np.stack(arrays))
    g = size // p
    return x.view(len(images), g, p, g, p, 3).permute(0, 1, 3, 2, 4, 5).reshape(len(images), g * g, 3 * p * p)


def tokenize(caption: str, config: V2Config) -> list[int]:
    """Words hashed into ``vocab`` buckets (crc32: stable across processes), truncated and padded."""
    words = re.findall(r"[a-z0-9]+", caption.lower())[: config.max_len]
    ids = [N_SPECIAL + zlib.crc32(w.encode()) % config.vocab for w in words]
    return ids + [PAD_ID] * (config.max_len - len(ids))
