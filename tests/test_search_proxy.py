"""The proxy task's data split and reward formula (no training here: CI scores architectures synthetically)."""

from __future__ import annotations

import pytest

from spinenet.data.trees import VAL_BLOCK, YELL_LARGE, YELL_SMALL, trees_dataset
from spinenet.engine.recipes import trees_cpu
from spinenet.search.proxy import _TreeSplitTask, compute_aware_reward, get_proxy, proxy_recipe


def _overlaps(window, block) -> bool:
    x0, y0, x1, y1 = window
    return x0 < block[2] and x1 > block[0] and y0 < block[3] and y1 > block[1]


def test_trees_proxy_small_image_reward_set_never_sees_the_final_block():
    """``reward_set=small-image`` trains on the large image's yell-train tiles and scores the small image."""
    proxy = get_proxy("trees-cpu")
    train, reward = _TreeSplitTask(proxy.detector, proxy.data, reward_set="small-image").build_datasets(proxy.recipe)
    assert len(train) and len(reward)
    for record in train.records:
        assert record.meta["source"] == YELL_LARGE and not _overlaps(record.window, VAL_BLOCK)
    assert all(record.meta["source"] != YELL_LARGE for record in reward.records)  # the small YELL image
    final = trees_dataset("yell-val", tile_size=200)
    assert {r.file_name for r in final.records}.isdisjoint({r.file_name for r in train.records + reward.records})
    data = proxy.recipe.data  # training tiles overlap; the reward is scored on larger tiles, as trees-cpu scores
    assert {_side(r.window) for r in train.records} == {data.tile_size} and data.tile_overlap > 0
    assert {_side(r.window) for r in reward.records} == {data.val_tile_size}
    assert len(train) > len(trees_dataset("yell-train", tile_size=data.tile_size).records) - len(reward)


def test_trees_proxy_large_block_reward_set():
    """``reward_set=large-block`` (the default) scores the large image's block beside yell-val and trains on every
    other tile of yell-train; neither side touches yell-val or the other."""
    proxy = get_proxy("trees-cpu")
    assert proxy.reward_set == "large-block"
    train, reward = _TreeSplitTask(proxy.detector, proxy.data).build_datasets(proxy.recipe)
    block = (0, VAL_BLOCK[1], VAL_BLOCK[0], 2472)
    assert len(reward) == 9 and all(r.meta["source"] == YELL_LARGE and _inside(r.window, block)
                                    for r in reward.records)
    assert {r.meta["source"] for r in train.records} == {YELL_LARGE, YELL_SMALL}
    for record in train.records:
        assert not _overlaps(record.window, VAL_BLOCK)
        assert record.meta["source"] != YELL_LARGE or not _overlaps(record.window, block)
    with pytest.raises(ValueError, match="reward_set='nope'"):
        _TreeSplitTask(proxy.detector, proxy.data, reward_set="nope")


def _inside(window, block) -> bool:
    return window[0] >= block[0] and window[1] >= block[1] and window[2] <= block[2] and window[3] <= block[3]


def _side(window) -> int:
    return max(window[2] - window[0], window[3] - window[1])


def test_trees_proxy_is_trees_cpu_with_smaller_sizes():
    """Same labelling, loss, optimiser, weight average, BN handling and crown scale as trees-cpu; only the sizes,
    the schedule's length and learning rate, and the evaluation cadence differ."""
    proxy = get_proxy("trees-cpu")
    changed = {path for path, _, _ in proxy.recipe.diff(trees_cpu())}
    assert changed == {"name", "data.image_size", "data.tile_size", "data.tile_overlap", "optim.lr",
                       "schedule.steps", "schedule.checkpoint_every",
                       "schedule.log_every", "eval.every"}
    data, base = proxy.recipe.data, trees_cpu().data
    crown_scale = (data.image_size / data.tile_size * data.scale_min, data.image_size / data.tile_size * data.scale_max)
    assert crown_scale == pytest.approx((base.image_size / base.tile_size * base.scale_min,
                                         base.image_size / base.tile_size * base.scale_max))


def test_proxy_recipe_applies_the_paper_shrink(tmp_path):
    proxy = get_proxy("trees-cpu")
    recipe = proxy_recipe(proxy, tmp_path / "arch.json", seed=7, overrides={"steps": 12, "model.head_width": 32})
    assert recipe.schedule.steps == 12 and recipe.seed == 7
    assert recipe.model.filter_size_scale == 0.25 and recipe.model.resample_alpha == 0.25
    assert recipe.model.endpoints_num_filters == 64 and recipe.model.head_width == 32
    assert recipe.model.block_specs == str(tmp_path / "arch.json")
    with pytest.raises(ValueError, match="did you mean 'steps'"):  # trial options are checked like overrides
        proxy_recipe(proxy, tmp_path / "arch.json", seed=7, overrides={"stpes": 12})
    coco = get_proxy("coco")
    shrink = (coco.recipe.data.image_size, coco.filter_size_scale, coco.resample_alpha, coco.head_width)
    assert shrink == (512, 0.25, 0.25, 64)
    with pytest.raises(ValueError, match="unknown proxy"):
        get_proxy("imagenet")


def test_compute_aware_reward():
    assert compute_aware_reward(0.5, 200, 0, -0.07) == 0.5  # off without a target
    assert compute_aware_reward(0.5, 200, 100, 0.0) == 0.5
    assert compute_aware_reward(0.5, 200, 100, -1.0) == pytest.approx(0.25)
    assert compute_aware_reward(0.5, 50, 100, -0.07) > 0.5  # smaller than the target: a bonus
    with pytest.raises(ValueError, match="target_macs"):
        compute_aware_reward(0.5, 200, -1, -0.07)
