"""The proxy task's data split and reward formula (no training here: CI scores architectures synthetically)."""

from __future__ import annotations

import pytest

from spinenet.data.trees import VAL_BLOCK, YELL_LARGE, trees_dataset
from spinenet.search.proxy import _TreeSplitTask, get_proxy, proxy_recipe
from spinenet.search.runner import compute_aware_reward


def _overlaps(window, block) -> bool:
    x0, y0, x1, y1 = window
    return x0 < block[2] and x1 > block[0] and y0 < block[3] and y1 > block[1]


def test_trees_proxy_never_sees_the_final_block():
    proxy = get_proxy("trees-cpu")
    train, reward = _TreeSplitTask(proxy.detector, proxy.data).build_datasets(proxy.recipe)
    assert len(train) and len(reward)
    for record in train.records:
        assert record.meta["source"] == YELL_LARGE and not _overlaps(record.window, VAL_BLOCK)
    assert all(record.meta["source"] != YELL_LARGE for record in reward.records)  # the small YELL image
    final = trees_dataset("yell-val", tile_size=200)
    assert {r.file_name for r in final.records}.isdisjoint({r.file_name for r in train.records + reward.records})


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
