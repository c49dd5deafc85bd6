"""Precise BN (engine.trainer.recalibrate_batchnorm, recipe field precise_bn_batches): BatchNorm statistics that
fit the trained weights, computed without changing the training run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spinenet.engine import Trainer, get_recipe, parse_overrides
from spinenet.engine.checkpoint import load_checkpoint
from spinenet.engine.trainer import recalibrate_batchnorm
from spinenet.tasks import get_task


def test_statistics_are_the_exact_average_over_the_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.ReLU(), nn.BatchNorm2d(4))
    model.eval()
    batches = [torch.randn(2, 3, 8, 8) * (k + 1) + k for k in range(5)]
    used = recalibrate_batchnorm(model, batches, lambda net, x: net(x))
    assert used == 5
    with torch.no_grad():
        features = [model[0](x) for x in batches]
    means = torch.stack([f.mean((0, 2, 3)) for f in features])
    variances = torch.stack([f.var((0, 2, 3), unbiased=True) for f in features])
    bn = model[1]
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(0), rtol=1e-4)
    assert bn.momentum == 0.01 and model[3].momentum == 0.1  # momenta restored
    assert not any(m.training for m in model.modules())  # and the modes


def _recipe(*overrides: str):
    return parse_overrides(get_recipe("smoke"), ["steps=4", "eval_every=2", "checkpoint_every=1000",
                                                 "model.filter_size_scale=0.125", "model.endpoints_num_filters=32",
                                                 "model.head_width=32", *overrides])


def _fit(path, *overrides: str):
    task = get_task("detection", model="retinanet_spinenet49s", data="trees:yell-train[34:36]",
                    val_data="trees:yell-train[34:36]")
    trainer = Trainer(task, _recipe(*overrides), path, device="cpu", progress=False)
    trainer.fit()
    return trainer


def test_the_training_run_is_unchanged_and_the_final_checkpoint_recalibrated(tmp_path, one_thread):
    """Recalibrating before each evaluation leaves the trained weights, optimizer and random state of a run as
    they are without it; the final checkpoint carries statistics recomputed for the final weights."""
    on = _fit(tmp_path / "on", "precise_bn_batches=3")
    off = _fit(tmp_path / "off", "precise_bn_batches=0")
    last_on = load_checkpoint(tmp_path / "on" / "checkpoints" / "last.pt")
    last_off = load_checkpoint(tmp_path / "off" / "checkpoints" / "last.pt")
    params = dict(on.model_core.named_parameters())
    for name, value in last_off["model"].items():
        if name in params:  # trained weights: identical
            assert torch.equal(value, last_on["model"][name]), name
    assert torch.equal(last_on["rng"]["torch"], last_off["rng"]["torch"])
    final = load_checkpoint(tmp_path / "on" / "checkpoints" / "final.pt")["model"]
    stats = [k for k in final if k.endswith("running_var")]
    assert stats and any(not torch.equal(final[k], last_off["model"][k]) for k in stats)
    # the final statistics are those of the final weights over the recalibration batches: recomputing agrees
    again = _fit(tmp_path / "again", "precise_bn_batches=3")
    final_again = load_checkpoint(tmp_path / "again" / "checkpoints" / "final.pt")["model"]
    assert all(torch.equal(final[k], final_again[k]) for k in stats)


def test_frozen_batchnorm_keeps_its_statistics(tmp_path, one_thread):
    """With bn_freeze the weights are fitted under the frozen statistics: precise BN leaves them alone."""
    trainer = _fit(tmp_path / "frozen", "precise_bn_batches=3", "bn_freeze=0.5")
    last = load_checkpoint(tmp_path / "frozen" / "checkpoints" / "last.pt")["model"]
    final = load_checkpoint(tmp_path / "frozen" / "checkpoints" / "final.pt")["model"]
    assert all(torch.equal(last[k], final[k]) for k in final if "running" in k)
    assert trainer.recipe.bn_freeze == 0.5


def test_negative_batches_refused(tmp_path):
    with pytest.raises(ValueError, match="precise_bn_batches=-1"):
        _fit(tmp_path / "bad", "precise_bn_batches=-1")


# The effect on a real run (running averages against recalibrated statistics on two tree tiles) is checked by
# tests/test_detection_train.py::test_memorises_two_tree_tiles_under_recalibrated_batchnorm.
