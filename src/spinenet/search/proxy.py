"""The proxy task that scores a sampled architecture (paper section 5.1, "NAS details"; spec section 6).

The paper trains each sample as a small RetinaNet -- SpineNet-49 widths x 0.25, resample alpha 0.25, 64-channel
box/class nets, 512 px, 5 epochs -- and uses its AP on 7,392 images held out of COCO train2017 as the reward.
:data:`PROXIES` holds that recipe (``coco``, for a GPU cluster; pass the two COCO files) and a CPU proxy on the
tree-crown data (``trees-cpu``, the default):

* the same model shrink as the paper (widths x 0.25, alpha 0.25, 64-channel heads), three head convs;
* trained on 200 px tiles of the large YELL image's ``yell-train`` part, seen at 128 px (crowns at 0.64 of
  their native size, the scale of an earlier 400 px -> 256 px ``trees-cpu`` recipe);
* the reward is AP50 on the tiles of the *small* YELL image (a different site tile, also in ``yell-train``);
  the ``yell-val`` block is never seen by the search and stays for the final comparison.

An optional compute-aware reward multiplies AP by ``(MACs / target_macs) ** macs_weight`` (MnasNet's form;
``macs_weight`` < 0 penalises large models, 0 = off).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..engine.config import DetectionData, DetectionModel, OptimConfig, Recipe, ScheduleConfig
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
    metric: str = "AP50"
    description: str = ""

    def model_overrides(self) -> dict[str, Any]:
        """Backbone and head overrides of ``create_detector`` (the paper's proxy shrink)."""
        return {"filter_size_scale": self.filter_size_scale, "resample_alpha": self.resample_alpha,
                "endpoints_num_filters": self.endpoints_num_filters, "head_width": self.head_width,
                "head_convs": self.head_convs}


PROXIES: dict[str, Proxy] = {
    "trees-cpu": Proxy(
        "trees-cpu",
        Recipe("search-proxy-trees", "detection", model=DetectionModel(bn_momentum=0.1),
               data=DetectionData(image_size=128, batch_size=8, scale_min=0.8, scale_max=1.25, tile_size=200),
               optim=OptimConfig(lr=0.08, precision="fp32"),
               schedule=ScheduleConfig(steps=300, warmup_steps=20, warmup_factor=0.1, decay="cosine",
                                       checkpoint_every=10**9, log_every=50)),
        head_convs=3,
        metric="AP50",
        description="CPU proxy: 300 steps of batch 8 at 128 px on 200 px yell-train tiles of the large YELL image; "
                    "reward AP50 on the small YELL image's tiles",
    ),
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


class _TreeSplitTask(DetectionTask):
    """``yell-train`` split by source image: the large YELL image trains, the small one scores."""

    def build_datasets(self, recipe: Recipe) -> tuple[Dataset, Dataset | None]:
        from ..data.trees import YELL_LARGE, TreeDataset, trees_dataset

        tile = recipe.data.tile_size or 200
        full = trees_dataset("yell-train", tile_size=tile)
        parts: dict[bool, list] = {True: [], False: []}
        for record in full.records:
            parts[record.meta["source"] == YELL_LARGE].append(record)
        train = TreeDataset(parts[True], full.classes, full.category_ids, name="trees:yell-train[large image]")
        val = TreeDataset(parts[False], full.classes, full.category_ids, name="trees:yell-train[small image]")
        return train, val


def proxy_split_summary(proxy: Proxy) -> dict[str, int]:
    """Tiles and boxes of the proxy's training and reward sets (for docs and checks)."""
    task = _TreeSplitTask("retinanet_spinenet49", "trees:yell-train")
    train, val = task.build_datasets(proxy.recipe)
    return {"train_tiles": len(train), "train_boxes": train.stats["boxes"], "reward_tiles": len(val),
            "reward_boxes": val.stats["boxes"]}


PROXY_OPTIONS = ("data", "val_data")  # the coco proxy's files; every other option is a recipe setting
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
    proxy_recipe(proxy, "arch.json", 0, settings)


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
        task: DetectionTask = _TreeSplitTask(proxy.detector, proxy.data)
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
