"""The proxy task that scores a sampled architecture (paper section 5.1, "NAS details"; spec section 6).

The paper trains each sample as a small RetinaNet -- SpineNet-49 widths x 0.25, resample alpha 0.25, 64-channel
box/class nets, 512 px, 5 epochs -- and uses its AP on 7,392 images held out of COCO train2017 as the reward.
:data:`PROXIES` holds that recipe (``coco``, for a GPU cluster; pass the two COCO files) and a CPU proxy on the
tree-crown data (``trees-cpu``, the default):

* the model: the paper's shrink (SpineNet widths x 0.25, resample alpha 0.25, 64 endpoint channels,
  64-channel heads; three head convs), so one trial fits in about 3 minutes of one core;
* the recipe (:func:`trees_proxy_recipe`): ``trees-cpu`` -- ATSS anchor labelling, P3-P5, AdamW with weight decay
  0.05, cosine schedule, BN momentum 0.1 and the BN freeze of the last 35% of the steps, the weight average
  (EMA, 0.999 with its ramp), colour jitter and flips, crowns seen at 0.8-1.2 of their native size -- with smaller
  windows (160 px tiles overlapping by 80 px, scaled 1.0-1.5 and cropped to 128 px: a quarter of the pixels of a
  ``trees-cpu`` step at the same crown scale), 800 steps instead of 850, a learning rate of 0.003 instead of
  0.001 (at 0.001 the small model had not started to find crowns after 400 steps), evaluation only at the end
  and no checkpoints;
* the data (``reward_set``, :data:`REWARD_SETS`): by default (``large-block``) the reward is AP50 on the large
  YELL image's block beside ``yell-val`` as 400 px tiles evaluated at 384 px -- the way the full recipe is scored:
  a held-out block of an image it trained on -- and the trial trains on the rest of ``yell-train``, the small YELL
  image included. ``small-image`` instead trains on the large image's ``yell-train`` tiles only and scores the
  small YELL image (a different site tile); it ranks architectures less like full training does
  (docs/experiments/proxy-rank.md). The ``yell-val`` block is never seen by the search and stays for the final
  comparison.

Trial times and rewards measured on this recipe are in docs/experiments/search.md.

An optional compute-aware reward multiplies AP by ``(MACs / target_macs) ** macs_weight`` (MnasNet's form;
``macs_weight`` < 0 penalises large models, 0 = off).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..data.trees import SOURCES, VAL_BLOCK, YELL_LARGE, YELL_SMALL, TreeDataset, trees_dataset
from ..engine.config import DetectionData, OptimConfig, Recipe, ScheduleConfig
from ..engine.recipes import trees_cpu
from ..specs import Architecture
from ..tasks.detection import DetectionTask


@dataclass(frozen=True)
class Proxy:
    """How one sampled architecture is trained and scored."""

    name: str
    recipe: Recipe
    detector: str = "retinanet_spinenet49"
    filter_size_scale: float = 0.25
    resample_alpha: float = 0.25
    endpoints_num_filters: int = 64
    head_width: int = 64
    head_convs: int = 4
    data: str = "trees:yell-train"
    val_data: str | None = None
    reward_set: str = "large-block"  # which part of trees:yell-train scores a trees proxy (REWARD_SETS)
    metric: str = "AP50"
    description: str = ""

    def model_overrides(self) -> dict[str, Any]:
        """Backbone and head overrides of ``create_detector`` (the paper's proxy shrink)."""
        return {"filter_size_scale": self.filter_size_scale, "resample_alpha": self.resample_alpha,
                "endpoints_num_filters": self.endpoints_num_filters, "head_width": self.head_width,
                "head_convs": self.head_convs}


def trees_proxy_recipe() -> Recipe:
    """The CPU proxy's recipe: ``trees-cpu`` with the sizes of one <= 3 minute trial (module docstring)."""
    return trees_cpu().replace(
        name="search-proxy-trees",
        # crowns at 0.8-1.2 of their native size, as trees-cpu, in 128 px windows
        image_size=128, tile_size=160, tile_overlap=80,
        # the x0.25 model learns too slowly at trees-cpu's 0.001 for a few hundred steps
        lr=0.003, steps=800,
        # the reward is the final evaluation; trial weights are not kept
        eval_every=0, checkpoint_every=10**9, log_every=50)


PROXIES: dict[str, Proxy] = {
    "trees-cpu": Proxy(
        "trees-cpu", trees_proxy_recipe(), head_convs=3, metric="AP50",
        description="CPU proxy: trees-cpu at 128 px for 800 steps, SpineNet widths x0.25; reward AP50 on the "
                    "large YELL image's block beside yell-val (400 px tiles), trained on the rest of yell-train"),
    "coco": Proxy(
        "coco",
        # 5 epochs of the 110,895 images left after holding out 7,392 (batch 64: 1,733 steps per epoch)
        Recipe("search-proxy-coco", "detection",
               data=DetectionData(image_size=512, batch_size=64, scale_min=0.8, scale_max=1.2),
               optim=OptimConfig(lr=0.07, precision="bf16"),
               schedule=ScheduleConfig(steps=5 * 1733, warmup_steps=500, checkpoint_every=1000, log_every=100)),
        data="", val_data="", metric="AP",
        description="the paper's proxy: SpineNet-49 x0.25 widths, alpha 0.25, 64-channel heads, 512 px, 5 epochs; "
                    "reward AP on a held-out split (data=TRAIN.json val_data=HELDOUT.json)",
    ),
}


def get_proxy(name: str) -> Proxy:
    try:
        return PROXIES[name]
    except KeyError:
        raise ValueError(f"unknown proxy {name!r}; choose one of {', '.join(PROXIES)}") from None


def _in_block(record) -> bool:
    """A tile of the large YELL image's bottom-left block (``x < 1099, y >= 1272``, beside ``yell-val``)."""
    x0, y0, x1, y1 = record.meta["window"]
    return record.meta["source"] == YELL_LARGE and x1 <= VAL_BLOCK[0] and y0 >= VAL_BLOCK[1]


# reward set -> (which tiles of trees:yell-train score the trial, a label); the rest of yell-train trains
REWARD_SETS = {
    "small-image": (lambda r: r.meta["source"] != YELL_LARGE, "small image"),
    "large-block": (_in_block, "large image's block beside yell-val"),
}


def check_reward_set(name: str) -> str:
    if name not in REWARD_SETS:
        raise ValueError(f"proxy option reward_set={name!r}: choose one of {', '.join(REWARD_SETS)}")
    return name


class _TreeSplitTask(DetectionTask):
    """``yell-train`` split in two by :data:`REWARD_SETS`: the reward tiles (``val_tile_size`` tiles; ``None``:
    ``tile_size``) score, the other tiles (``tile_size`` tiles overlapping by ``tile_overlap``) train. Training
    tiles are cut per region of ``yell-train``, so none crosses into the reward set."""

    def __init__(self, *args: Any, reward_set: str = "large-block", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reward_set = check_reward_set(reward_set)

    def build_datasets(self, recipe: Recipe) -> tuple[Dataset, Dataset | None]:
        data = recipe.data  # DetectionData
        tile = data.tile_size or 200
        whole = max(SOURCES[YELL_SMALL].size)  # val_tile_size=0: the small image as one sample
        val_tile = tile if data.val_tile_size is None else (data.val_tile_size or whole)
        scores, label = REWARD_SETS[self.reward_set]
        tiled = trees_dataset("yell-train", tile_size=tile, overlap=data.tile_overlap)
        train = TreeDataset([r for r in tiled.records if not scores(r)], tiled.classes, tiled.category_ids,
                            name=f"trees:yell-train[without the {label}]")
        if val_tile != tile or data.tile_overlap:
            tiled = trees_dataset("yell-train", tile_size=val_tile)
        val = TreeDataset([r for r in tiled.records if scores(r)], tiled.classes, tiled.category_ids,
                          name=f"trees:yell-train[{label}]")
        return train, val


def proxy_split_summary(proxy: Proxy, reward_set: str | None = None) -> dict[str, int]:
    """Tiles and boxes of the proxy's training and reward sets (for docs and checks)."""
    task = _TreeSplitTask("retinanet_spinenet49", "trees:yell-train", reward_set=reward_set or proxy.reward_set)
    train, val = task.build_datasets(proxy.recipe)
    return {"train_tiles": len(train), "train_boxes": train.stats["boxes"], "reward_tiles": len(val),
            "reward_boxes": val.stats["boxes"]}


PROXY_OPTIONS = ("data", "val_data", "reward_set")  # the coco proxy's files, the trees proxies' reward set; every
# other option is a recipe setting
REWARD_OPTIONS = ("proxy", "target_macs", "macs_weight", "device")  # read by the search runner


def proxy_recipe(proxy: Proxy, arch_path: str | Path, seed: int, overrides: dict[str, Any] | None = None) -> Recipe:
    """The trial's recipe: the proxy's, with the architecture, the model shrink and ``overrides`` (recipe
    settings, checked as ``key=value`` overrides are) applied."""
    settings = {k: v for k, v in (overrides or {}).items() if k not in PROXY_OPTIONS}
    model = {f"model.{k}": v for k, v in proxy.model_overrides().items()}
    return proxy.recipe.with_values({**model, "model.block_specs": str(arch_path), "seed": seed, **settings})


def check_proxy_options(options: dict[str, Any]) -> None:
    """Refuse reward options that are neither the runner's nor a setting of the proxy's recipe (before a search
    starts, instead of in every trial)."""
    proxy = get_proxy(str(options.get("proxy", "trees-cpu")))
    settings = {k: v for k, v in options.items() if k not in REWARD_OPTIONS}
    check_reward_set(str(settings.get("reward_set", proxy.reward_set)))
    proxy_recipe(proxy, "arch.json", 0, settings)


def resolve_options(options: dict[str, Any], recorded: bool = False) -> dict[str, Any]:
    """``options`` with a trees proxy's reward set written out, as a trial's job and a search's journal record
    them: a finished trial then names the data it was scored on, and a later default never passes it off as
    another's (``reuse``, ``--resume``). ``recorded``: options read back from a record, where a missing reward set
    means the small image (the only reward set, then the default, before records named it)."""
    proxy = get_proxy(str(options.get("proxy", "trees-cpu")))
    if proxy.name != "trees-cpu":
        return dict(options)
    default = "small-image" if recorded else proxy.reward_set
    return {**options, "reward_set": check_reward_set(str(options.get("reward_set", default)))}


def train_proxy(arch: Architecture, proxy: Proxy, out_dir: str | Path, seed: int,
                overrides: dict[str, Any] | None = None, device: str = "cpu") -> dict[str, float]:
    """Train and evaluate one architecture on the proxy task; returns the detection metrics.

    ``out_dir`` is replaced (an interrupted attempt starts again from scratch). ``overrides`` are recipe settings
    (``steps``, ``lr``, ``tile_size``, ``model.head_width``, ...) or the coco proxy's ``data`` / ``val_data``.
    """
    from ..engine.trainer import Trainer

    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    arch_path = out / "arch.json"
    arch.save(arch_path)
    recipe = proxy_recipe(proxy, arch_path, seed, overrides)
    if proxy.name == "trees-cpu" and not proxy.data.startswith("trees:yell-train"):
        raise ValueError("the trees-cpu proxy trains on trees:yell-train")
    if proxy.name == "trees-cpu":
        reward_set = str((overrides or {}).get("reward_set", proxy.reward_set))
        task: DetectionTask = _TreeSplitTask(proxy.detector, proxy.data, reward_set=reward_set)
    else:
        data = (overrides or {}).get("data") or proxy.data
        val = (overrides or {}).get("val_data") or proxy.val_data
        if not data or not val:
            raise ValueError(f"proxy {proxy.name!r} needs data=TRAIN and val_data=HELDOUT (COCO .json files)")
        task = DetectionTask(proxy.detector, str(data), str(val))
    trainer = Trainer(task, recipe, out / "train", device=device, progress=False)
    metrics = trainer.fit()
    if (out / "train" / "checkpoints").exists():
        shutil.rmtree(out / "train" / "checkpoints")  # a search keeps scores, not hundreds of weights
    return metrics


def backbone_cost(arch: Architecture, size: int, **overrides: Any) -> tuple[int, int]:
    """Multiply-adds at ``size`` and parameters of ``arch``'s backbone under ``overrides`` (on the meta device)."""
    from ..profile import count_macs, count_params, on_meta
    from ..registry import create_model

    model = on_meta(lambda: create_model("spinenet49", block_specs=arch, **overrides))
    return count_macs(model, size), count_params(model)


def compute_aware_reward(value: float, macs: int, target_macs: float, weight: float) -> float:
    """``value * (macs / target_macs) ** weight`` (MnasNet's form); ``weight`` 0 or no target: ``value``."""
    if not weight or not target_macs:
        return value
    if target_macs < 0 or macs <= 0:
        raise ValueError(f"compute-aware reward: target_macs={target_macs} and MACs={macs} must be > 0")
    return value * (macs / target_macs) ** weight


def score_architecture(arch: Architecture, options: dict[str, Any], out_dir: str | Path, seed: int) -> dict[str, Any]:
    """One proxy trial, as a search and an experiment run it: ``options`` holds the reward options (``proxy``,
    ``target_macs``, ``macs_weight``, ``device``) and the proxy's own settings; returns the reward, the metrics,
    and the backbone's MACs (at the proxy's input size) and parameters."""
    options = dict(options)
    proxy = get_proxy(str(options.pop("proxy", "trees-cpu")))
    target = float(options.pop("target_macs", 0) or 0)
    weight = float(options.pop("macs_weight", 0) or 0)
    device = str(options.pop("device", "cpu"))
    metrics = train_proxy(arch, proxy, out_dir, seed, options, device=device)
    trained = proxy_recipe(proxy, "arch.json", seed, options)  # its sizes, options included
    macs, params = backbone_cost(arch, trained.data.image_size, filter_size_scale=trained.model.filter_size_scale,
                                 resample_alpha=trained.model.resample_alpha,
                                 endpoints_num_filters=trained.model.endpoints_num_filters)
    reward = compute_aware_reward(float(metrics[proxy.metric]), macs, target, weight)
    return {"reward": reward, "metrics": metrics, "macs": macs, "params": params}
