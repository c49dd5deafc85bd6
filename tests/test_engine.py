"""The shared training engine: schedules, weight decay groups, exact resume, refusal, outputs."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from spinenet.engine import Trainer, build_optimizer, get_recipe, lr_factor, param_groups, parse_overrides
from spinenet.engine.checkpoint import atomic_save, load_checkpoint
from spinenet.engine.sampler import ResumableBatchSampler
from spinenet.tasks import get_task

TINY = ["model.filter_size_scale=0.125", "model.endpoints_num_filters=16", "model.head_width=16"]


def test_lr_schedule_warmup_step_cosine_and_linear():
    r = get_recipe("coco-protocol-b")
    assert lr_factor(0, r) == pytest.approx(0.0067 / 0.28)
    assert lr_factor(1000, r) == pytest.approx(0.0067 / 0.28 * 0.5 + 0.5)
    assert lr_factor(148_159, r) == 1.0
    assert lr_factor(148_160, r) == pytest.approx(0.1)
    assert lr_factor(157_420, r) == pytest.approx(0.01)
    c = r.replace(schedule="cosine", warmup_steps=0, steps=100)
    assert lr_factor(0, c) == 1.0 and lr_factor(50, c) == pytest.approx(0.5) and lr_factor(100, c) == pytest.approx(0)
    assert lr_factor(25, c) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    lin = r.replace(schedule="linear", warmup_steps=20, warmup_factor=0.1, steps=120)
    assert lr_factor(0, lin) == pytest.approx(0.1) and lr_factor(10, lin) == pytest.approx(0.55)
    assert lr_factor(20, lin) == 1.0 and lr_factor(45, lin) == pytest.approx(0.75)
    assert lr_factor(120, lin) == 0.0 and lr_factor(130, lin) == 0.0
    with pytest.raises(ValueError, match="step, cosine, linear"):
        lr_factor(0, lin.replace(schedule="exp"))  # refused from the first step, not after warmup


def test_overrides_are_typed_and_checked():
    r = parse_overrides(get_recipe("smoke"), ["steps=7", "lr=0.5", "lr_steps=0.5,0.9", "model.head_width=8"])
    assert (r.schedule.steps, r.optim.lr, r.schedule.lr_steps, r.model.head_width) == (7, 0.5, (0.5, 0.9), 8)
    with pytest.raises(ValueError, match="steps='x'"):
        parse_overrides(r, ["steps=x"])
    with pytest.raises(ValueError, match="not key=value"):
        parse_overrides(r, ["steps"])
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("protocol-z")
    assert parse_overrides(r, ["channels_last=true"]).optim.channels_last is True
    assert parse_overrides(r, ["optim.channels_last=0"]).optim.channels_last is False
    with pytest.raises(ValueError, match="channels_last='maybe': expected true or false"):
        parse_overrides(r, ["channels_last=maybe"])


def test_weight_decay_only_on_conv_and_linear_weights():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 1e-4)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0


def test_optimizer_sgd_or_adamw_with_the_same_decay_groups():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    r = get_recipe("smoke").replace(lr=0.01, momentum=0.8, weight_decay=0.05)
    sgd = build_optimizer(model, r)
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.8
    adamw = build_optimizer(model, parse_overrides(r, ["optimizer=adamw"]))
    assert type(adamw) is torch.optim.AdamW and adamw.param_groups[0]["betas"] == (0.8, 0.999)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    assert [len(g["params"]) for g in adamw.param_groups] == [1, 3]  # conv weight | conv bias, BN weight and bias
    with pytest.raises(ValueError, match="optimizer='adam'.*sgd, adamw"):
        build_optimizer(model, r.replace(optimizer="adam"))


def test_sampler_resumes_mid_stream_and_shards():
    full = ResumableBatchSampler(10, 3, seed=1)
    it = iter(full)
    batches = [next(it) for _ in range(8)]
    resumed = iter(ResumableBatchSampler(10, 3, seed=1, start_step=5))
    assert [next(resumed) for _ in range(3)] == batches[5:]
    seen = [i for b in batches[:3] for i, _ in b] + [batches[3][0][0]]
    assert sorted(seen) == list(range(10))  # one epoch is a permutation
    ranks = [iter(ResumableBatchSampler(10, 2, seed=1, rank=k, world_size=2)) for k in range(2)]
    first = [next(r) for r in ranks]
    assert len(first[0]) == 2 and not {i for i, _ in first[0]} & {i for i, _ in first[1]}


def test_atomic_save_and_clear_load_errors(tmp_path):
    path = atomic_save({"task": "detection", "model": {}}, tmp_path / "a" / "c.pt")
    assert load_checkpoint(path)["task"] == "detection"
    assert not list(path.parent.glob(".*tmp*"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")


def _trainer(out, steps, resume=False, extra=(), **kw):
    recipe = parse_overrides(get_recipe("smoke"), [f"steps={steps}", "checkpoint_every=2", "batch_size=2",
                                                   "image_size=128", *TINY, *extra])
    task = get_task("detection", model="retinanet_spinenet49s", data="trees:osbs", val_data=kw.get("val"))
    return Trainer(task, recipe, out, device="cpu", resume=resume, progress=False)


def test_resume_is_exact_and_outputs_are_written(tmp_path):
    straight = _trainer(tmp_path / "a", 4)
    straight.fit()
    _trainer(tmp_path / "b", 4).fit(stop_at=2)  # an interrupted run
    resumed = _trainer(tmp_path / "b", 4, resume=True)
    resumed.fit()
    a = straight.model_core.state_dict()
    b = resumed.model_core.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "N steps != N/2 + resume + N/2"
    with open(tmp_path / "b" / "metrics.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh) if r["loss"]]
    assert steps == [1, 2, 3, 4]
    for name in ("checkpoints/last.pt", "checkpoints/final.pt", "recipe.json", "curves.png"):
        assert (tmp_path / "b" / name).exists(), name
    assert json.loads((tmp_path / "b" / "recipe.json").read_text())["schedule"]["steps"] == 4


def test_channels_last_trains_in_nhwc_and_resumes_exactly(tmp_path):
    straight = _trainer(tmp_path / "a", 2, extra=["channels_last=true"])
    straight.fit()
    convs = [m.weight for m in straight.model_core.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    _trainer(tmp_path / "b", 2, extra=["channels_last=true"]).fit(stop_at=1)
    resumed = _trainer(tmp_path / "b", 2, resume=True, extra=["channels_last=true"])
    resumed.fit()
    a, b = straight.model_core.state_dict(), resumed.model_core.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "N steps != N/2 + resume + N/2 in channels_last"


def test_zero_init_residual_starts_each_block_as_its_shortcut_and_resumes_exactly(tmp_path):
    from spinenet.layers import Bottleneck, Residual

    fresh = _trainer(tmp_path / "a", 2, extra=["zero_init_residual=true"])
    fresh.fit(stop_at=0)
    blocks = [m for m in fresh.model_core.modules() if isinstance(m, (Bottleneck, Residual))]
    last_bn = [b.conv3.bn if isinstance(b, Bottleneck) else b.conv2.bn for b in blocks]
    assert blocks and all(bool((bn.weight == 0).all()) for bn in last_bn)
    identity = next(b for b in blocks if b.shortcut is None).eval()
    x = torch.randn(2, identity.conv1.conv.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(identity(x), torch.relu(x)), "a zero-initialised block is not its shortcut"
    other = [m.bn.weight for m in fresh.model_core.modules()
             if isinstance(getattr(m, "bn", None), torch.nn.BatchNorm2d) and m.bn not in last_bn]
    assert other and all(bool((w == 1).all()) for w in other), "only the residual branches' last BN is zeroed"
    straight = _trainer(tmp_path / "b", 2, extra=["zero_init_residual=true"])
    straight.fit()
    resumed = _trainer(tmp_path / "a", 2, resume=True, extra=["zero_init_residual=true"])
    resumed.fit()
    a, b = straight.model_core.state_dict(), resumed.model_core.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "zero_init_residual: N steps != 0 + resume + N"


def test_bn_freeze_keeps_running_statistics_and_resumes_exactly(tmp_path):
    def bn_state(trainer):
        bns = [m for m in trainer.model_core.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        return ([b.running_var.clone() for b in bns], [b.weight.detach().clone() for b in bns],
                [b.training for b in bns])

    run = _trainer(tmp_path / "a", 4, extra=["bn_freeze=0.5", "lr=0.01"])
    run.fit(stop_at=2)  # the two steps before the freeze update the running statistics
    var2, gamma2, _ = bn_state(run)
    resumed = _trainer(tmp_path / "a", 4, resume=True, extra=["bn_freeze=0.5", "lr=0.01"])
    resumed.fit()
    var4, gamma4, training = bn_state(resumed)
    assert all(torch.equal(a, b) for a, b in zip(var2, var4)), "frozen BN statistics moved"
    assert any(not torch.equal(a, b) for a, b in zip(gamma2, gamma4)), "BN affine weights stopped training"
    assert not any(training) and resumed.model_core.training  # BN in inference mode, the detector in training
    straight = _trainer(tmp_path / "b", 4, extra=["bn_freeze=0.5", "lr=0.01"])
    straight.fit()
    a, b = straight.model_core.state_dict(), resumed.model_core.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "bn_freeze: N steps != N/2 + resume + N/2"
    unfrozen = _trainer(tmp_path / "c", 4, extra=["lr=0.01"])
    unfrozen.fit()
    assert any(not torch.equal(a, b) for a, b in zip(var2, bn_state(unfrozen)[0]))  # without it steps 3-4 move them
    with pytest.raises(ValueError, match=r"bn_freeze=1.5.*\[0, 1\]"):
        _trainer(tmp_path / "d", 4, extra=["bn_freeze=1.5"]).fit()


def test_existing_output_is_refused_without_resume(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_text("step\n")
    with pytest.raises(ValueError, match="already exists.*--resume"):
        _trainer(tmp_path / "run", 2)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _trainer(tmp_path / "empty", 2, resume=True)


def test_weight_ema_follows_the_tf_ramp_and_copies_integer_buffers():
    from spinenet.engine.ema import WeightEMA

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(model, 0.9)
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model[1].num_batches_tracked += 3
    ema.update(model)  # first update: d = min(0.9, 1 / 10) = 0.1
    torch.testing.assert_close(ema.module[0].weight, start + 0.9)
    assert int(ema.module[1].num_batches_tracked) == 3
    assert ema.current_decay() == pytest.approx(2 / 11)
    for _ in range(100):
        ema.update(model)
    assert ema.current_decay() == 0.9
    assert not any(p.requires_grad for p in ema.module.parameters())
    with pytest.raises(ValueError, match="ema_decay"):
        WeightEMA(model, 1.0)


def test_ema_checkpoints_ship_the_average_and_resume_exactly(tmp_path):
    ema = ["ema_decay=0.5"]
    straight = _trainer(tmp_path / "a", 4, extra=ema)
    straight.fit()
    _trainer(tmp_path / "b", 4, extra=ema).fit(stop_at=2)
    resumed = _trainer(tmp_path / "b", 4, resume=True, extra=ema)
    resumed.fit()
    for x, y in ((straight.model_core, resumed.model_core), (straight.ema.module, resumed.ema.module)):
        a, b = x.state_dict(), y.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), "N steps != N/2 + resume + N/2 with ema_decay"
    final = load_checkpoint(tmp_path / "b" / "checkpoints" / "final.pt")
    assert final["ema_updates"] == 4
    trained, averaged = final["train_model"], final["model"]
    assert all(torch.equal(trained[k], v) for k, v in resumed.model_core.state_dict().items())
    assert all(torch.equal(averaged[k], v) for k, v in resumed.ema.module.state_dict().items())
    assert any(not torch.equal(trained[k], averaged[k]) for k in trained if trained[k].is_floating_point())
    # a run written without the average cannot silently resume with one
    _trainer(tmp_path / "c", 4).fit(stop_at=2)
    with pytest.raises(ValueError, match=r"optim.ema_decay: 0.0 -> 0.5"):
        _trainer(tmp_path / "c", 4, resume=True, extra=ema).fit()
