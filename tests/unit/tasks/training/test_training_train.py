"""Training: deterministic per seed, a delta that never reaches the loss trains the identical model, resume from a checkpoint."""
import threading

import pandas as pd
import torch

from tasks.training.config import apply_deltas
from tasks.training.data import make_task
from tasks.training.train import TrainResult, build, train

from test_training_gradient_flow import TINY


def _same(a, b) -> bool:
    return all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_logging_delta_trains_the_identical_model():
    task = make_task(64, 5, 0.9)
    a = train(TINY, task, seed=1, device="cpu")
    b = train(apply_deltas(TINY, {"recipe.log_every": 3}), task, seed=1, device="cpu")
    assert _same(a, b)
    assert not _same(a, train(TINY, task, seed=2, device="cpu"))


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    task = make_task(64, 5, 0.9)
    full = train(TINY, task, seed=0, device="cpu")
    ckpt = tmp_path / "ckpt.pt"
    seen = []

    class Killed(Exception):
        pass

    def kill_at_first(path, step):
        seen.append(step)
        raise Killed  # the process dies right after the checkpoint is written

    try:
        train(TINY, task, seed=0, checkpoint=ckpt, on_checkpoint=kill_at_first, device="cpu")
    except Killed:
        pass
    assert seen == [3] and ckpt.exists()
    resumed = train(TINY, task, seed=0, checkpoint=ckpt, device="cpu")
    assert resumed.facts["resumed_from_step"] == 3
    assert _same(full, resumed)
    assert list(resumed.curves["step"]) == list(full.curves["step"])


def test_initial_and_loaded_networks_neither_read_nor_move_the_global_generator():
    """A seed's initial network is a pure function of the seed: another thread drawing from torch's global
    generator (a rediagnosis loading a trained network while trainings start) must not change it, and loading
    a trained network must not draw from it (it once did, and a no-op variant trained a different model)."""
    reference = {k: v.clone() for k, v in build(TINY, 0).state_dict().items()}
    torch.manual_seed(123)
    before = torch.get_rng_state()
    net = build(TINY, 0)
    loaded = TrainResult(TINY, 0, reference, pd.DataFrame(), pd.DataFrame()).network()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(net.state_dict()[k], v) and torch.equal(loaded.state_dict()[k], v) for k, v in reference.items())


def test_a_seeds_initial_network_is_unchanged_by_concurrent_draws_from_the_global_generator():
    reference = {k: v.clone() for k, v in build(TINY, 0).state_dict().items()}
    stop = threading.Event()

    def draw():
        while not stop.is_set():
            torch.rand(256)

    thread = threading.Thread(target=draw)
    thread.start()
    try:
        differing = sum(any(not torch.equal(build(TINY, 0).state_dict()[k], v) for k, v in reference.items())
                        for _ in range(30))
    finally:
        stop.set()
        thread.join()
    assert differing == 0
