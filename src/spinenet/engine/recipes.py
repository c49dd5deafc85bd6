"""Named training recipes: small functions returning a :class:`~spinenet.engine.config.Recipe`, each a few
fields away from the defaults, with the command and the result it reaches in its docstring.

Every field can be overridden from the command line: ``section.field=value`` or a bare field name
(:func:`~spinenet.engine.config.parse_overrides`; docs/training.md). The paper's COCO protocols (spec 7.1, 7.2)
are full-scale recipes for GPU clusters; the ``*-cpu`` recipes are sized for a laptop.
"""

from __future__ import annotations

from typing import Any, Callable

from .config import (ClassificationEval, ClassificationModel, DataConfig, DetectionData, DetectionEval,
                     DetectionModel, OptimConfig, Recipe, ScheduleConfig, SegmentationData, SegmentationEval,
                     SegmentationModel, parse_overrides)

__all__ = ["RECIPES", "Recipe", "get_recipe", "parse_overrides", "recipe"]

RECIPES: dict[str, Callable[[], Recipe]] = {}


def recipe(fn: Callable[[], Recipe]) -> Callable[[], Recipe]:
    name = fn.__name__.replace("_", "-")
    if name in RECIPES:
        raise ValueError(f"recipe {name!r} is registered twice")
    RECIPES[name] = fn
    return fn


@recipe
def coco_protocol_a() -> Recipe:
    """Paper protocol A (spec 7.1): 250 epochs at batch 256 (118,287 images: 462 steps per epoch), LR 0.28,
    x0.1 / x0.01 for the last 30 / 10 epochs, scale jitter [0.8, 1.2], relu. Full scale, not run on CPU::

        torchrun --nproc_per_node N -m spinenet train --model retinanet_spinenet49 --data COCO/train.json \\
            --val-data COCO/val.json --recipe coco-protocol-a --out runs/r49 batch_size=B lr=LR
    """
    return Recipe("coco-protocol-a", "detection",
                  data=DetectionData(image_size=640, batch_size=256, scale_min=0.8, scale_max=1.2),
                  optim=OptimConfig(lr=0.28),
                  schedule=ScheduleConfig(steps=250 * 462, warmup_steps=5 * 462, lr_steps=(220 / 250, 240 / 250),
                                          checkpoint_every=2000))


@recipe
def coco_protocol_b() -> Recipe:
    """Paper protocol B: protocol A without DropBlock, scale jitter [0.5, 2.0], 350 epochs (TF1 yaml header:
    162,050 steps, LR steps 148,160 / 157,420, warmup 2000 steps). Command as protocol A."""
    return coco_protocol_a().replace(name="coco-protocol-b", steps=162_050, lr_steps=(148_160 / 162_050,
                                     157_420 / 162_050), warmup_steps=2000, scale_min=0.5, scale_max=2.0)


@recipe
def coco_protocol_c() -> Recipe:
    """Paper protocol C (the released "-best" checkpoints): B + stochastic depth 0.2 + swish, 500 epochs
    (TF1 yamls: 231,500 steps, LR steps 217,610 / 226,870). Command as protocol A."""
    return coco_protocol_b().replace(name="coco-protocol-c", steps=231_500, lr_steps=(217_610 / 231_500,
                                     226_870 / 231_500), activation="swish", stochastic_depth_rate=0.2)


@recipe
def trees_cpu() -> Recipe:
    """``spinenet train --task detection --model retinanet_spinenet49s --data trees:yell-train --val-data
    trees:yell-val --recipe trees-cpu`` (``make demo``): held-out YELL AP50 0.556 ± 0.029, OSBS_029 0.216 ± 0.025,
    SOAP_061 0.209 ± 0.017 over seeds 0-2 (``benchmarks/bench_trees.py``; docs/experiments/trees.md)."""
    return Recipe(
        "trees-cpu", "detection",
        # a few hundred steps: the official BN momenta (0.003 / 0.01) would leave the running statistics near
        # their initial values; ATSS gives crowns below the smallest anchor several positives
        model=DetectionModel(bn_momentum=0.1, max_level=5, matcher="atss"),
        # 320 px tiles overlapping by 160 px, scaled 1.0-1.5 and cropped to 256 px: crowns at 0.8-1.2 of their size
        data=DetectionData(image_size=256, batch_size=8, scale_min=1.0, scale_max=1.5, color_jitter=0.2,
                           tile_size=320, tile_overlap=160, val_tile_size=400),
        optim=OptimConfig(optimizer="adamw", lr=0.001, weight_decay=0.05, grad_clip=10.0, channels_last=True,
                          ema_decay=0.999),
        # the last 300 steps with BN in inference mode: fitted under the normalisation it is evaluated with
        schedule=ScheduleConfig(steps=850, warmup_steps=50, warmup_factor=0.1, decay="cosine", bn_freeze=0.353,
                                checkpoint_every=100),
        # the statistics the last 300 steps were fitted under stay (precise BN off)
        eval=DetectionEval(every=100, image_size=384, precise_bn_batches=0))  # a multiple of the 128 SpineNet pads to


@recipe
def nuclei_maskrcnn_cpu() -> Recipe:
    """``spinenet train --model maskrcnn_spinenet49s --data nuclei:left --val-data nuclei:right --recipe
    nuclei-maskrcnn-cpu``: mask AP50 0.756 / 0.827 / 0.822 (mask AP 0.319 / 0.406 / 0.405) on the right half's
    57 nuclei for seeds 0 / 1 / 2 (docs/experiments/nuclei.md)."""
    return Recipe(
        "nuclei-maskrcnn-cpu", "detection",
        # SpineNet-49S at a quarter of its filters, 32-channel endpoints and heads, fewer RoIs and proposals
        model=DetectionModel(bn_momentum=0.1, filter_size_scale=0.25, endpoints_num_filters=32, head_width=32,
                             box_fc_dim=128, box_batch_size_per_image=128, rpn_post_nms_top_n_train=300),
        data=DetectionData(image_size=128, batch_size=4, scale_min=0.8, scale_max=1.25, tile_size=128,
                           val_tile_size=0),
        optim=OptimConfig(lr=0.08, precision="fp32"),
        schedule=ScheduleConfig(steps=100, warmup_steps=10, warmup_factor=0.1, decay="cosine", checkpoint_every=100),
        eval=DetectionEval(image_size=512, precise_bn_batches=0))  # the whole 512 x 256 half at its native size


@recipe
def smoke() -> Recipe:
    """A few steps for tests: ``spinenet train --model retinanet_spinenet49s --data trees:soap --recipe smoke
    --out RUN`` trains 4 steps of 2 images; it checks the mechanics, not a result."""
    return Recipe("smoke", "detection", data=DetectionData(image_size=128, batch_size=2, scale_min=1.0, scale_max=1.0),
                  optim=OptimConfig(lr=0.01, precision="fp32"),
                  schedule=ScheduleConfig(steps=4, warmup_steps=2, checkpoint_every=2, log_every=1))


@recipe
def imagenet() -> Recipe:
    """The paper's improved ImageNet recipe (spec 7.1-7.2, TPU classification yamls), full scale, not run on CPU::

        spinenet train --task classification --model classifier_spinenet49 --data IMAGENET/train --val-data IMAGENET/val \\
            --recipe imagenet --out runs/spinenet49-imagenet
    """
    return Recipe(
        "imagenet", "classification",
        # swish, stochastic depth 0.2, BN momentum 0.1 (TF 0.9), label smoothing 0.1
        model=ClassificationModel(activation="swish", stochastic_depth_rate=0.2, bn_momentum=0.1,
                                  label_smoothing=0.1),
        # Inception random-resized crop (area 0.08-1) + flip to 224
        data=DataConfig(image_size=224, batch_size=4096, num_workers=8, scale_min=0.08, scale_max=1.0, hflip=0.5),
        optim=OptimConfig(lr=1.6, weight_decay=1e-4, grad_clip=0.0),
        # 200 epochs at batch 4096, cosine from 1.6 after 5 warmup epochs from 0
        schedule=ScheduleConfig(steps=62_557, warmup_steps=1_564, warmup_factor=0.0, decay="cosine",
                                checkpoint_every=1_000, log_every=50),
        eval=ClassificationEval(every=1_564, crop=0.875))


@recipe
def fashion_mnist_cpu() -> Recipe:
    """``spinenet train --task classification --model classifier_spinenet49s --data fashion-mnist:train --val-data
    fashion-mnist:test --recipe fashion-mnist-cpu``: test top-1 92.15% (seed 0; 91.92% seed 1), 11 min 11 s on 2 idle
    CPU cores (docs/experiments/fashion-mnist.md)."""
    return Recipe(
        "fashion-mnist-cpu", "classification",
        # a stride-4 level in the head (mobile backbones have no level-2 block: give them model.min_level=3);
        # every residual branch's last BN gamma starts at 0
        model=ClassificationModel(min_level=2, flavor="model_garden", zero_init_residual=True),
        # 28 px images up-sampled to 48 (level 3 is then 6x6); flips, no crop jitter
        data=DataConfig(image_size=48, batch_size=128, num_workers=1, scale_min=1.0, scale_max=1.0, hflip=0.5),
        optim=OptimConfig(lr=0.25, weight_decay=5e-5, grad_clip=0.0, precision="bf16", channels_last=True),
        schedule=ScheduleConfig(steps=1300, warmup_steps=50, warmup_factor=0.1, decay="linear", checkpoint_every=500,
                                log_every=50),
        # the whole image, logits averaged with its mirror image
        eval=ClassificationEval(crop=1.0, hflip=True, precise_bn_batches=0))


@recipe
def nuclei_cpu() -> Recipe:
    """``spinenet train --task segmentation --model segmenter_spinenet49s --data nuclei:right --val-data nuclei:left
    --recipe nuclei-cpu`` (and left -> right): foreground IoU 0.830 / 0.832 (seed 0) and 0.827 / 0.867 (seed 1)
    right -> left / left -> right, against Otsu 0.673 / 0.767 (docs/experiments/nuclei.md)."""
    return Recipe(
        "nuclei-cpu", "segmentation",
        # the head reads level 2 (stride 4); mobile backbones have no level-2 block: give them model.min_level=3
        model=SegmentationModel(bn_momentum=0.1, min_level=2, flavor="model_garden"),
        # 128 px crops with flips and quarter turns; each image normalised by its own 1st / 99.8th percentiles,
        # crops given a 4 x 4 grid of gains in [1/3, 3] and a gamma in [1/1.5, 1.5]
        data=SegmentationData(image_size=128, batch_size=8, num_workers=1, scale_min=0.8, scale_max=1.25, hflip=0.5,
                              vflip=0.5, rot90=True, norm_low=1.0, norm_high=99.8, gain=3.0, gamma=1.5, gain_grid=4),
        optim=OptimConfig(lr=0.05, weight_decay=5e-5, precision="fp32"),
        schedule=ScheduleConfig(steps=600, warmup_steps=50, warmup_factor=0.1, decay="cosine", checkpoint_every=200,
                                log_every=20),
        eval=SegmentationEval(every=200, precise_bn_batches=0))  # 128 px windows (the crop size) with 50% overlap


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]()
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None


def _auto(value: str) -> Any:
    """A ``key=value`` string as int, float, bool or None when it reads as one, else the string (search options,
    which have no declared types)."""
    for conv in (int, float):
        try:
            return conv(value)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(value.lower(), value)
