"""Augmentation as torchvision v2 transforms: boxes and masks move with the pixels, dropped boxes take their
per-box fields along, and every draw comes from the given generator."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from spinenet.data.classification import RandomResizedCrop, center_crop_resize, classification_train_transform
from spinenet.data.segmentation import IntensityJitter, SegmentationCrop, segmentation_train_transform
from spinenet.data.transforms import (ColorJitter, Compose, RandomHorizontalFlip, RandomTranspose, RandomVerticalFlip,
                                      ScaleJitterCrop, resize_uint8)

RECTS = [(4, 6, 30, 20), (40, 10, 70, 50), (10, 40, 26, 58), (60, 2, 79, 9)]  # x0, y0, x1, y1 on an 80 x 60 image


def _sample() -> tuple[torch.Tensor, dict]:
    """An 80 x 60 image with white rectangles; mask k holds the value label k on rectangle k, so a mask that
    lands with the wrong box or label is visible."""
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    masks = torch.zeros(len(RECTS), 60, 80, dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(RECTS):
        image[:, y0:y1, x0:x1] = 255
        masks[k, y0:y1, x0:x1] = k + 1
    labels = torch.arange(1, len(RECTS) + 1)
    return image, {"boxes": torch.tensor(RECTS, dtype=torch.float32), "labels": labels,
                   "difficult": labels % 2 == 0, "masks": masks, "image_id": 7}


def _pipeline(generator: torch.Generator, scale: tuple[float, float] = (0.4, 2.0)) -> Compose:
    return Compose([RandomHorizontalFlip(0.5, generator), RandomVerticalFlip(0.5, generator),
                    RandomTranspose(0.5, generator), ScaleJitterCrop((48, 64), scale, generator)])


def test_steps_are_v2_transforms_that_compose_with_torchvision():
    image, target = _sample()
    for step in (RandomHorizontalFlip(), RandomVerticalFlip(), RandomTranspose(), ColorJitter(), ScaleJitterCrop(32),
                 RandomResizedCrop(16), SegmentationCrop(16, (1.0, 1.0), 0.5), IntensityJitter(2.0, 1.5)):
        assert isinstance(step, v2.Transform)
    # tv_tensors in, tv_tensors out; a stock v2 transform in the middle moves the boxes and masks as well
    wrapped = (tv_tensors.Image(image), {**target, "masks": tv_tensors.Mask(target["masks"]),
                                         "boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY",
                                                                           canvas_size=(60, 80))})
    out, t = Compose([RandomHorizontalFlip(1.0), v2.Pad([5, 3, 0, 0])])(*wrapped)
    assert isinstance(out, tv_tensors.Image) and isinstance(t["boxes"], tv_tensors.BoundingBoxes)
    assert isinstance(t["masks"], tv_tensors.Mask) and t["boxes"].canvas_size == (63, 85)
    x0, y0, x1, y1 = RECTS[0]
    assert t["boxes"][0].tolist() == [80 - x1 + 5, y0 + 3, 80 - x0 + 5, y1 + 3]
    # plain tensors in, plain tensors out (what the datasets yield and the models take)
    out, t = Compose([RandomHorizontalFlip(1.0)])(image, target)
    assert type(out) is torch.Tensor and all(type(t[k]) is torch.Tensor for k in ("boxes", "masks", "labels"))


@pytest.mark.parametrize("seed", range(12))
def test_boxes_masks_and_labels_follow_the_pixels(seed):
    image, target = _sample()
    out, t = _pipeline(torch.Generator().manual_seed(seed))(image, target)
    assert tuple(out.shape) == (3, 48, 64) and t["masks"].shape == (len(t["boxes"]), 48, 64)
    assert len(t["labels"]) == len(t["difficult"]) == len(t["boxes"])
    assert torch.equal(t["difficult"], t["labels"] % 2 == 0)  # per-box fields dropped together
    padding = (out == torch.tensor([124, 116, 104], dtype=torch.uint8).view(3, 1, 1)).all(0)
    white = out[0] > 127
    for box, label, mask in zip(t["boxes"].tolist(), t["labels"].tolist(), t["masks"]):
        x0, y0, x1, y1 = box
        assert x1 > x0 and y1 > y0 and x0 >= 0 and y0 >= 0 and x1 <= 64 and y1 <= 48
        assert set(mask.unique().tolist()) <= {0, label}  # each mask stays with its own label
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            assert len(xs), f"box {box} kept without its mask"
        if len(xs):  # nearest resizing: the mask covers its box to a pixel
            assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
            assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1
        inner = white[int(y0) + 2:int(y1) - 1, int(x0) + 2:int(x1) - 1]  # 2 px in from the (blurred) edges
        assert inner.all(), "the box's interior is not the painted rectangle"
        assert not padding[int(y0) + 1:int(y1), int(x0) + 1:int(x1)].any(), "a box reaches into the padding"
    # no visible object lost its box: every painted pixel lies in a kept box (to a pixel of resampling blur)
    covered = torch.zeros(48, 64, dtype=torch.bool)
    for x0, y0, x1, y1 in t["boxes"].tolist():
        covered[max(int(y0) - 1, 0):int(y1) + 2, max(int(x0) - 1, 0):int(x1) + 2] = True
    assert not (white & ~covered).any()


def test_empty_targets_and_masks_keep_their_shapes():
    image, target = _sample()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 60, 80, dtype=torch.uint8)}
    for seed in range(4):
        out, t = _pipeline(torch.Generator().manual_seed(seed))(image, empty)
        assert tuple(out.shape) == (3, 48, 64) and tuple(t["boxes"].shape) == (0, 4)
        assert tuple(t["masks"].shape) == (0, 48, 64) and tuple(t["labels"].shape) == (0,)


def test_draws_come_from_the_generator_only():
    image, target = _sample()
    state = torch.get_rng_state()
    a = _pipeline(torch.Generator().manual_seed(5))(image, target)
    torch.manual_seed(123)  # the global RNG does not matter when a generator is given
    b = _pipeline(torch.Generator().manual_seed(5))(image, target)
    torch.set_rng_state(state)
    _pipeline(torch.Generator().manual_seed(5))(image, target)
    assert torch.equal(torch.get_rng_state(), state), "a seeded pipeline drew from the global RNG"
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    assert a[1]["crop_offset"] == b[1]["crop_offset"]
    outputs = {tuple(_pipeline(torch.Generator().manual_seed(s))(image, target)[1]["boxes"].flatten().tolist())
               for s in range(8)}
    assert len(outputs) > 4  # different seeds, different augmentations


def test_inception_crop_is_a_crop_of_the_image_then_a_resize():
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    boxes = tv_tensors.BoundingBoxes([[0.0, 0.0, 60.0, 40.0]], format="XYXY", canvas_size=(40, 60))
    for seed in range(6):
        crop = RandomResizedCrop(24, (0.2, 0.6), generator=torch.Generator().manual_seed(seed))
        params = crop.make_params([tv_tensors.Image(image)])
        top, left, h, w = params["top"], params["left"], params["height"], params["width"]
        assert 0 <= top and top + h <= 40 and 0 <= left and left + w <= 60
        assert 0.2 * 2400 * 0.8 <= h * w <= 0.6 * 2400 * 1.2  # the area fraction drawn (rounded sides)
        crop = RandomResizedCrop(24, (0.2, 0.6), generator=torch.Generator().manual_seed(seed))
        out, out_boxes = crop(tv_tensors.Image(image), boxes)
        assert torch.equal(out.as_subclass(torch.Tensor), resize_uint8(image[:, top:top + h, left:left + w], [24, 24]))
        torch.testing.assert_close(out_boxes.as_subclass(torch.Tensor), torch.tensor([[0.0, 0.0, 24.0, 24.0]]))
    # no 90-100 % crop fits a 10 x 100 strip: the centred square of the short side
    strip = torch.arange(100, dtype=torch.uint8).expand(3, 10, 100)
    out = RandomResizedCrop(10, (0.9, 1.0), generator=torch.Generator().manual_seed(0))(tv_tensors.Image(strip))
    assert torch.equal(out.as_subclass(torch.Tensor), strip[:, :, 45:55])


def test_classification_transform_flips_after_the_crop():
    image = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    flipped = {bool(torch.equal(classification_train_transform(28, (1.0, 1.0), 0.5)(
        image, 3, torch.Generator().manual_seed(s))[0], image.flip(-1))) for s in range(10)}
    assert flipped == {True, False}  # whole-image crops: only the flip changes the pixels
    assert torch.equal(classification_train_transform(28, (1.0, 1.0), 0.0)(image, 3, torch.Generator())[0], image)


def test_center_crop_rounds_the_origin_down():
    image = torch.randint(0, 256, (3, 41, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    side = round(41 * 0.8)  # 33: a 4 px margin on top (8 // 2), 8 px on the left (17 // 2)
    assert torch.equal(center_crop_resize(image, side, 0.8), image[:, 4:37, 8:41])
    assert torch.equal(center_crop_resize(image, 16, 0.8), resize_uint8(image[:, 4:37, 8:41], [16, 16]))


def test_segmentation_crop_keeps_mask_on_the_pixels_and_pads_with_ignore():
    mask = torch.zeros(50, 70, dtype=torch.int64)
    mask[10:30, 20:45] = 1
    image = mask.float().expand(3, -1, -1)
    for seed in range(8):
        for scale in ((1.0, 1.0), (0.5, 1.5)):
            crop = SegmentationCrop(64, scale, 0.5, 0.5, True, generator=torch.Generator().manual_seed(seed))
            out, out_mask = crop(tv_tensors.Image(image), tv_tensors.Mask(mask))
            assert tuple(out.shape) == (3, 64, 64) and tuple(out_mask.shape) == (64, 64)
            labelled = out_mask != 255
            assert (out[:, ~labelled] == 0).all()  # padding: zero image, ignored mask
            agree = (out[0] > 0.5) == (out_mask == 1)
            if scale == (1.0, 1.0):  # no resampling: the mask is the image exactly, flipped and turned alike
                assert agree[labelled].all()
            else:  # resampled: they differ at most on the rectangle's one-pixel border
                assert (~agree[labelled]).sum() <= 2 * (64 + 64)
    # the intensity step changes the image, never the mask
    transform = segmentation_train_transform(32, (1.0, 1.0), 0.5, gain=2.0, gamma=1.5, gain_grid=2)
    a_image, a_mask = transform(image * 0.5, mask, torch.Generator().manual_seed(0))
    plain = segmentation_train_transform(32, (1.0, 1.0), 0.5)
    b_image, b_mask = plain(image * 0.5, mask, torch.Generator().manual_seed(0))
    assert torch.equal(a_mask, b_mask) and not torch.equal(a_image, b_image)
    assert type(a_image) is torch.Tensor and type(a_mask) is torch.Tensor
