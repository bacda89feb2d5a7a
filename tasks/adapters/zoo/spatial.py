"""The spatial calibration zoo: two tiny VLMs whose spatial behaviour is planted by construction.

Both read [image tokens ; caption words] into a small transformer "LM" with
positional embeddings, after a vision encoder and a projector:

- vision encoder: a per-patch MLP on raw pixels, no attention and no position
  embedding, so a token says *what* its patch shows and the token's place in
  the sequence says *where* (raster order);
- ``keeps``: the projector maps each token on its own, order kept: the LM sees
  where the object is;
- ``destroys``: the projector also sorts the tokens by a content key, so the LM
  receives the *set* of patch contents and no position (only where inside a
  patch an edge falls survives, a few pixels' worth).

Weights are drawn from a seed (``random_init_config: {seed: n}``), not
trained: the planted property is the architecture's, at every seed. They are
the ground truth of the probing mission: probes must find position after the
projector of ``keeps`` and not after the projector of ``destroys``. Hidden
states of every stage come from ``states``; extraction points are named
``vision``, ``projector`` and ``lm`` (layer k), as the probing mission names them.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from PIL import Image
from torch import nn

from tasks.adapters.contract import Inputs, ModelSpec, Smoke
from tasks.data.vocabulary import PAD_ID, VOCAB, tokenize

VARIANTS = ("keeps", "destroys")
IMAGE_SIZE, PATCH, DIM, HEADS, LAYERS, MAX_LEN = 32, 4, 64, 4, 2, 8


def sinusoidal(n: int, dim: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(100.0) / dim))
    table = torch.zeros(n, dim)
    table[:, 0::2], table[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return table


class SpatialVLM(nn.Module):
    def __init__(self, variant: str):
        super().__init__()
        self.variant = variant
        self.n_tokens = (IMAGE_SIZE // PATCH) ** 2
        self.vision = nn.Sequential(nn.Linear(3 * PATCH * PATCH, DIM), nn.GELU(), nn.Linear(DIM, DIM))
        self.projector = nn.Linear(DIM, DIM)
        self.register_buffer("sort_key", torch.randn(DIM), persistent=True)
        self.token_embed = nn.Embedding(len(VOCAB), DIM)
        self.register_buffer("pos", sinusoidal(self.n_tokens + MAX_LEN, DIM), persistent=False)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(DIM, HEADS, 2 * DIM, dropout=0.0, batch_first=True)
                                    for _ in range(LAYERS))
        self.head = nn.Linear(DIM, 1)

    def project(self, vision: torch.Tensor) -> torch.Tensor:
        tokens = self.projector(vision)
        if self.variant == "destroys":  # the tokens' order now depends on their content only
            order = (tokens @ self.sort_key).argsort(dim=1)
            tokens = tokens.gather(1, order[..., None].expand_as(tokens))
        return tokens

    def states(self, patches: torch.Tensor, token_ids: torch.Tensor, padding: torch.Tensor) -> dict[str, torch.Tensor]:
        """Hidden states of the image tokens at every point: vision, projector, lm.0 .. lm.{L-1}; plus the score."""
        vision = self.vision(patches)
        projected = self.project(vision)
        x = torch.cat([projected, self.token_embed(token_ids)], dim=1) + self.pos
        mask = torch.cat([torch.zeros(len(x), self.n_tokens, dtype=torch.bool), padding], dim=1)
        out = {"vision": vision, "projector": projected}
        for i, layer in enumerate(self.layers):
            x = layer(x, src_key_padding_mask=mask)
            out[f"lm.{i}"] = x[:, :self.n_tokens]
        out["score"] = self.head(x.mean(1)).squeeze(-1)
        return out


def _patchify(images: list[Image.Image]) -> torch.Tensor:
    arrays = [np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.float32) / 255.0 for im in images]
    x = torch.from_numpy(np.stack(arrays)) - 0.5
    g = IMAGE_SIZE // PATCH
    x = x.view(len(images), g, PATCH, g, PATCH, 3).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(len(images), g * g, PATCH * PATCH * 3)


class SpatialZooModel:
    family = "spatial calibration zoo (vision MLP → projector → transformer LM)"
    capabilities = frozenset({"score", "mask", "states"})
    random_init = False  # the weights are the planted model itself, not a stand-in for missing weights

    def __init__(self, spec: ModelSpec, net: SpatialVLM, seed: int):
        self.spec, self.net, self.seed = spec, net, seed
        self.revision = hashlib.sha256(f"zoo-spatial|{net.variant}|{seed}|{IMAGE_SIZE}|{PATCH}|{DIM}|{LAYERS}".encode()
                                       ).hexdigest()[:12]
        self.n_layers = LAYERS

    def prepare(self, images: list[Image.Image], captions: list[str], sample_ids: list[str]) -> Inputs:
        ids = torch.tensor([tokenize(c, MAX_LEN) for c in captions], dtype=torch.long).view(len(captions), MAX_LEN)
        return Inputs({"patches": _patchify(images), "token_ids": ids, "padding": ids == PAD_ID}, list(sample_ids))

    @torch.no_grad()
    def states(self, inputs: Inputs) -> dict[str, torch.Tensor]:
        t = inputs.tensors
        return self.net.states(t["patches"], t["token_ids"], t["padding"])

    def score(self, inputs: Inputs) -> torch.Tensor:
        return self.states(inputs)["score"]

    def mask(self, inputs: Inputs, image_keep: bool, text_keep: bool) -> Inputs:
        t = dict(inputs.tensors)
        if not image_keep:
            t["patches"] = torch.zeros_like(t["patches"])
        if not text_keep:
            t["token_ids"] = t["token_ids"].masked_fill(~t["padding"], VOCAB.index("[MASK]"))
        return Inputs(t, list(inputs.sample_ids), dict(inputs.meta))


class SpatialZooAdapter:
    """``zoo-spatial``: ``source`` is the variant (keeps | destroys); the weights' seed is ``random_init_config.seed``."""

    name = "zoo-spatial"
    family = SpatialZooModel.family
    capabilities = SpatialZooModel.capabilities
    smoke = Smoke(source="keeps", weights=False)  # built from its seed: nothing to download, nothing Blocked

    def locate(self, spec: ModelSpec) -> tuple[bool, list[str]]:
        return True, ["built in memory from its seed"]

    def load(self, spec: ModelSpec) -> SpatialZooModel:
        if spec.source not in VARIANTS:
            raise ValueError(f"zoo-spatial model {spec.name}: source {spec.source!r} is not a variant: use one of {VARIANTS}")
        options = spec.random_config
        unknown = sorted(set(options) - {"seed"})
        if unknown:
            raise ValueError(f"zoo-spatial model {spec.name}: random_init_config keys {unknown}: it takes only seed")
        seed = int(options.get("seed", 0))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = SpatialVLM(spec.source).eval()
        return SpatialZooModel(spec, net, seed)
