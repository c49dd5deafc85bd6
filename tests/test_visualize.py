"""Drawing through torchvision with one palette: labels and outlines scale with the image, boxes carry their class's
palette colour, masks are blended where they are and nowhere else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spinenet.visualize import (color, draw_class_map, draw_classification, draw_detections, drawing_scale,
                                label_font, label_sizes, palette, save_png, segmentation_palette)

GREY = 128


def _near(drawn: torch.Tensor, rgb: tuple[int, int, int], tol: int = 40) -> torch.Tensor:
    """``[H, W]`` bool: pixels within ``tol`` of ``rgb`` in every channel."""
    return ((drawn.int() - torch.tensor(rgb).view(3, 1, 1)).abs() <= tol).all(0)


def _draw_one_box(side: int) -> tuple[torch.Tensor, list[int]]:
    image = torch.full((3, side, side), GREY, dtype=torch.uint8)
    box = [round(0.1 * side), round(0.3 * side), round(0.9 * side), round(0.9 * side)]
    return draw_detections(image, torch.tensor([box], dtype=torch.float32), [1], ["Tree"], [0.87]), box


def test_the_label_font_is_a_truetype_file():
    path = label_font()
    assert path is not None and Path(path).is_file() and path.lower().endswith(".ttf")


@pytest.mark.parametrize("small, large", [(400, 1600), (300, 2400)])
def test_labels_and_outlines_scale_with_the_image(small, large):
    heights, widths, outlines = [], [], []
    for side in (small, large):
        drawn, (x0, y0, x1, y1) = _draw_one_box(side)
        assert drawn.dtype == torch.uint8 and drawn.shape == (3, side, side)
        # the outline is the class's palette colour, as thick as drawing_scale says
        column = drawn[:, :, (x0 + x1) // 2]
        on_bottom_edge = [bool((column[:, y] == torch.tensor(color(1))).all()) for y in range(y1 - 20, y1 + 1)]
        outlines.append(sum(on_bottom_edge))
        assert outlines[-1] == drawing_scale(side, side)[1]
        # the label: text in the contrasting colour on a strip of the box colour, inside the box's top-left corner
        r, g, b = color(1)
        text_rgb = (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)
        text = _near(drawn, text_rgb, 60)
        rows, cols = text.any(1).nonzero().flatten(), text.any(0).nonzero().flatten()
        assert len(rows) and rows.min() >= y0 and cols.min() >= x0, "label text missing or outside its box"
        heights.append(int(rows.max() - rows.min() + 1))
        widths.append(int(cols.max() - cols.min() + 1))
        # nothing is drawn outside the box and its label strip
        assert (drawn[:, : y0 - 1] == GREY).all() and (drawn[:, y1 + 1:] == GREY).all()
    ratio = large / small
    assert heights[0] >= 6, f"label {heights[0]} px high on a {small} px image: not readable"
    assert 0.6 * ratio <= heights[1] / heights[0] <= 1.4 * ratio, heights
    assert 0.6 * ratio <= widths[1] / widths[0] <= 1.4 * ratio, widths
    assert outlines[1] > outlines[0]


def test_small_boxes_get_smaller_labels_down_to_a_floor():
    boxes = torch.tensor([[0.0, 0, 50, 10], [0, 0, 50, 40], [0, 0, 50, 300]])
    assert label_sizes(boxes, 26) == [8, 14, 26]
    side, h = 1024, 20  # dense small objects on a large image: their labels stay smaller than the image's
    image = torch.full((3, side, side), GREY, dtype=torch.uint8)
    drawn = draw_detections(image, torch.tensor([[100.0, 100, 200, 100 + h]]), [1], ["nucleus"], [0.5])
    strip = (drawn.int() - torch.tensor(color(1)).view(3, 1, 1)).abs().le(2).all(0)  # outline and label strip
    rows = strip.any(1).nonzero().flatten()
    assert rows.min() >= 100 and rows.max() - 100 < drawing_scale(side, side)[0]  # stays inside a small label


def test_masks_are_blended_where_the_mask_is():
    image = torch.full((3, 120, 160), 100, dtype=torch.uint8)
    masks = torch.zeros(2, 1, 120, 160)
    masks[0, 0, 30:80, 10:50] = 0.9
    masks[1, 0, 30:80, 100:140] = 0.7
    masks[1, 0, 90:100, 100:140] = 0.3  # below 0.5: not part of the instance
    boxes = torch.tensor([[8.0, 28, 52, 82], [98, 28, 142, 82]])
    drawn = draw_detections(image, boxes, [1, 1], ["a", "a"], [0.9, 0.8], masks=masks, alpha=0.5)
    for k, xs in enumerate((slice(15, 45), slice(105, 135))):  # below the label strip, inside the outline
        expected = (0.5 * 100 + 0.5 * torch.tensor(color(k), dtype=torch.float32)).view(3, 1, 1)
        assert ((drawn[:, 55:75, xs].float() - expected).abs() <= 1).all(), k  # instance k in colour k
    assert (drawn[:, 85:, :] == 100).all()  # the thresholded-out part and everything below the boxes: untouched
    assert (drawn[:, :25, :] == 100).all() and (drawn[:, :, 60:90] == 100).all()
    assert color(0) != color(1)


def test_class_maps_use_the_same_palette():
    image = torch.full((3, 8, 8), 50, dtype=torch.uint8)
    mask = torch.zeros(8, 8, dtype=torch.long)
    mask[:4, :4] = 2
    mask[6:, 6:] = 255  # ignored
    drawn = draw_class_map(image, mask, alpha=1.0, num_classes=3)
    assert (drawn[:, :4, :4] == torch.tensor(color(2)).view(3, 1, 1)).all()
    assert (drawn[:, 4:, :4] == 50).all() and (drawn[:, 6:, 6:] == 50).all()
    assert [tuple(c) for c in segmentation_palette(5)] == palette(5)
    with pytest.raises(ValueError, match="num_classes=2"):
        draw_class_map(image, mask, num_classes=2)


def test_no_detections_leaves_the_image_and_bad_input_is_refused(tmp_path):
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    assert torch.equal(draw_detections(image, torch.zeros(0, 4), [], []), image)
    with pytest.raises(ValueError, match="uint8 RGB"):
        draw_detections(image.float(), torch.zeros(0, 4), [], [])
    with pytest.raises(ValueError, match="differ"):
        draw_detections(image, torch.zeros(2, 4), [1], ["a"])
    path = save_png(image, tmp_path / "sub" / "x.png")
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(path)), image.permute(1, 2, 0).numpy())
    assert [p.name for p in path.parent.iterdir()] == ["x.png"]  # no temporary file left


def test_classification_labels_stack_in_their_classes_colours():
    """The frame in the top class's colour; one label strip per class from the top down, each in its class's
    colour; labels that do not fit a small image are left out."""
    image = torch.full((3, 240, 320), GREY, dtype=torch.uint8)
    drawn = draw_classification(image, [4, 1, 2], ["coat", "shirt", "bag"], torch.tensor([0.7, 0.2, 0.1]))
    assert drawn.shape == image.shape and (drawn[:, -1, 100] == torch.tensor(color(4))).all()
    inside = drawn[:, 3:-3, 3:-3]  # within the frame's 2 px outline
    strip = [torch.nonzero(_near(inside, color(k), tol=0).any(1)).flatten() for k in (4, 1, 2)]  # label rows
    assert all(len(r) > 5 for r in strip)
    assert strip[0].max() < strip[1].min() and strip[1].max() < strip[2].min()  # stacked, best on top
    assert not _near(drawn[:, 120:-4, 4:-4], color(1), tol=0).any()  # nothing below the labels
    small = draw_classification(torch.full((3, 28, 28), GREY, dtype=torch.uint8), [4, 1, 2], ["a", "b", "c"],
                                [0.7, 0.2, 0.1])
    assert _near(small, color(4), tol=0).any() and not _near(small, color(2), tol=0).any()
    with pytest.raises(ValueError, match="class ids"):
        draw_classification(image, [1, 2], ["a"], [0.5, 0.5])


def test_one_palette_across_the_package():
    import spinenet.models.segmentation as seg
    import spinenet.predict as predict
    import spinenet.visualize as visualize

    assert seg.segmentation_palette is visualize.segmentation_palette and seg.draw_overlay is visualize.draw_overlay
    assert predict.PALETTE == palette(10)
    assert len(set(palette(64))) == 64


def test_the_earlier_draw_detections_still_draws_with_a_warning():
    from PIL import Image

    from spinenet.predict import draw_detections as earlier

    image = torch.full((3, 40, 40), 100, dtype=torch.uint8)
    with pytest.warns(DeprecationWarning, match="spinenet.visualize.draw_detections"):
        drawn = earlier(image, torch.tensor([[2.0, 2, 38, 38]]), torch.tensor([0.9]), ["a"])
    assert isinstance(drawn, Image.Image) and drawn.size == (40, 40)
    assert tuple(np.asarray(drawn)[38, 20]) == color(0)  # the first name takes the palette's first colour
    with pytest.raises(ValueError, match="colors"), pytest.warns(DeprecationWarning):
        earlier(image, torch.tensor([[2.0, 2, 38, 38]]), torch.tensor([0.9]), ["a"], colors={"a": (1, 2, 3)})
