"""Train one configuration on the mitigation task: resumable, with gradient flow recorded.

Every ``recipe.checkpoint_every`` steps the whole state (weights, optimiser,
schedule, random generator, curves so far) is written atomically to
``checkpoint``; a run that finds one resumes at its step, so a killed
training loses at most that many steps. ``on_checkpoint`` lets the caller
log each checkpoint as evidence. Runs on a GPU when one is there.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from tasks.adapters.zoo.calibration import _masked, _normalise, _one_thread
from tasks.evidence import schema
from tasks.training import gradient_flow, ogm_ge
from tasks.training.config import TrainConfig
from tasks.training.data import TaskData, as_tensors
from tasks.training.losses import balanced_loss
from tasks.training.model import ModalityFusionNet

def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class TrainResult:
    config: TrainConfig
    seed: int
    state_dict: dict[str, torch.Tensor]
    curves: pd.DataFrame          # step, loss_total, loss_task, loss_visual, loss_text, k_image, k_text
    grads: pd.DataFrame           # step, pathway, layer, norm
    facts: dict[str, float] = field(default_factory=dict)

    def network(self) -> ModalityFusionNet:
        return ModalityFusionNet.loaded(self.config.model, self.state_dict).eval()


def build(config: TrainConfig, seed: int) -> ModalityFusionNet:
    """The initial network of ``seed``, from a generator of its own (trainings and rediagnoses share the process)."""
    return ModalityFusionNet.initialised(config.model, torch.Generator().manual_seed(seed))


def train(config: TrainConfig, task: TaskData, seed: int, checkpoint: Path | None = None,
          on_checkpoint: Callable[[Path, int], None] | None = None, device: str | None = None,
          freeze: tuple[str, ...] = ()) -> TrainResult:
    """Train from scratch, or from ``checkpoint`` if it holds this config's state; ``freeze``: pathways kept fixed."""
    device = device or default_device()
    with _one_thread():
        return _fit(config, task, seed, checkpoint, on_checkpoint, torch.device(device), freeze)


def _fit(config, task, seed, checkpoint, on_checkpoint, device, freeze) -> TrainResult:
    start = time.perf_counter()
    m, r, loss_cfg, mod = config.model, config.recipe, config.loss, config.modulation
    data = as_tensors(task, m.image_size, m.patch, m.max_len)
    net = build(config, seed)
    pixels = data.raw.reshape(-1, 3)
    net.pixel_mean.copy_(pixels.mean(0))
    net.pixel_std.copy_(pixels.std(0).clamp_min(1e-3))
    net.to(device)
    patches = _normalise(data.raw, net.cpu()).to(device)
    net.to(device)
    ids, padding, targets = data.ids.to(device), data.padding.to(device), data.targets.to(device)
    pathways = net.pathways()
    for name in freeze:
        for _, params in pathways[name]:
            for p in params:
                p.requires_grad_(False)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimiser = (torch.optim.SGD(trainable, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay)
                 if r.optimizer == "sgd" else torch.optim.AdamW(trainable, lr=r.lr, weight_decay=r.weight_decay))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=r.lr, total_steps=r.steps)
    gen = torch.Generator().manual_seed(seed)
    curves: list[dict] = []
    grads: list[dict] = []
    first = 0
    if checkpoint is not None and checkpoint.exists():
        saved = torch.load(checkpoint, map_location=device, weights_only=False)
        if saved["digest"] == config.digest() and saved["seed"] == seed and saved["data"] == task.content_hash:
            net.load_state_dict(saved["model"])
            optimiser.load_state_dict(saved["optimiser"])
            schedule.load_state_dict(saved["schedule"])
            gen.set_state(saved["generator"].cpu())  # map_location moved it with the rest
            curves, grads, first = saved["curves"], saved["grads"], saved["step"]
    n = len(targets)
    net.train()
    for step in range(first, r.steps):
        idx = torch.randint(0, n, (r.batch_size,), generator=gen).to(device)
        p, t = _augment(patches[idx], ids[idx], padding[idx], r.max_mask_rate, r.modality_dropout, gen)
        parts = net.forward_parts(p, t, padding[idx])
        loss = balanced_loss(parts, targets[idx], loss_cfg.lambda_visual, loss_cfg.lambda_text, loss_cfg.label_smoothing)
        optimiser.zero_grad(set_to_none=True)
        loss["total"].backward()
        k = {"image": 1.0, "text": 1.0}
        if mod.method == "ogm_ge" and step >= mod.start_step and (mod.end_step is None or step <= mod.end_step):
            s = ogm_ge.confidences(net, p, t, padding[idx], targets[idx])
            k = ogm_ge.coefficients(s["image"], s["text"], mod.alpha)
            ogm_ge.modulate(pathways, k, gen)
        if step % r.log_every == 0 or step == r.steps - 1:
            curves.append({"step": step, **{f"loss_{name}": float(v.detach()) for name, v in loss.items()},
                           "k_image": k["image"], "k_text": k["text"]})
            grads += [{"step": step, "pathway": pw, "layer": layer, "norm": v}
                      for (pw, layer), v in gradient_flow.norms(pathways).items()]
        optimiser.step()
        schedule.step()
        done = step + 1
        if checkpoint is not None and (done % r.checkpoint_every == 0) and done < r.steps:
            _save(checkpoint, {"digest": config.digest(), "seed": seed, "data": task.content_hash, "step": done,
                               "model": net.state_dict(), "optimiser": optimiser.state_dict(),
                               "schedule": schedule.state_dict(), "generator": gen.get_state(),
                               "curves": curves, "grads": grads})
            if on_checkpoint:
                on_checkpoint(checkpoint, done)
    net.eval()
    curve_frame, grad_frame = pd.DataFrame(curves), pd.DataFrame(grads)
    facts = {"resumed_from_step": first, "steps": r.steps, "train_seconds": round(time.perf_counter() - start, 2),
             "on_gpu": int(device.type == "cuda"), "config_loads": 1,
             **{schema.trainable_key(pw): sum(p.numel() for _, ps in layers for p in ps if p.requires_grad)
                for pw, layers in pathways.items()},
             **loss_facts(curve_frame, len(targets), r.batch_size), **gradient_flow.summarise(grad_frame),
             **{schema.gradflow_key(pw, "nonzero_frac"): float((g.groupby("step")["norm"].sum() > 0).mean())
                for pw, g in grad_frame.groupby("pathway")}}
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return TrainResult(config, seed, state, curve_frame, grad_frame, facts)


def loss_facts(curves: pd.DataFrame, n_train: int, batch_size: int) -> dict[str, float]:
    """First and last task loss, and the relative drop over the first two epochs (the checklist's "loss drops")."""
    epoch = max(1, n_train // batch_size)
    first = float(curves["loss_total"].iloc[0])
    early = curves[curves["step"] <= 2 * epoch]["loss_total"].iloc[-3:]
    return {"loss/first": first, "loss/last": float(curves["loss_total"].iloc[-1]),
            "loss/drop_first_epochs": (first - float(early.mean())) / first if first else 0.0}


def _augment(patches, ids, padding, max_mask_rate: float, modality_dropout: float, gen: torch.Generator):
    """The zoo's masking (so masked inputs are in distribution for the Shapley diagnostics), on any device."""
    b = patches.shape[0]

    def drop(shape):
        rate = torch.rand(b, 1, generator=gen) * max_mask_rate
        whole = torch.rand(b, 1, generator=gen) < modality_dropout
        return ((torch.rand(*shape, generator=gen) < rate) | whole).to(patches.device)

    return _masked(patches, ids, padding, drop(patches.shape[:2]), drop(ids.shape))


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}-{threading.get_ident()}")
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill never leaves a half-written checkpoint
