"""Training: deterministic per seed, a delta that never reaches the loss trains the identical model, resume from a checkpoint."""
import torch

from tasks.training.config import apply_deltas
from tasks.training.data import make_task
from tasks.training.train import train

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
