"""Instance masks through the data stack: COCO polygons / RLE, mask-aware augmentation, segm AP, nuclei
instances, drawing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from spinenet.data import CocoDetection, dataset_from_path
from spinenet.data.masks import masks_to_rles, segmentation_to_mask
from spinenet.data.transforms import RandomHorizontalFlip, ScaleJitterCrop
from spinenet.metrics import evaluate_coco
from spinenet.visualize import color, draw_detections


def _rect(h, w, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _coco_files(tmp_path, with_segmentation=True):
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    rle = mask_utils.encode(np.asfortranarray(_rect(40, 60, 20, 30, 30, 50)))
    anns = [
        # polygon: a 10 x 20 rectangle (x 5..25, y 5..15)
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 5, 20, 10],
         "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]]},
        # compressed RLE (string counts, as in COCO result files)
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [30, 20, 20, 10],
         "segmentation": {"size": [40, 60], "counts": rle["counts"].decode()}},
        # uncompressed RLE (list counts, COCO's crowd format) of the column block x 0..2, y 0..40, not crowd
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 40],
         "segmentation": {"size": [40, 60], "counts": [0, 80, 2320]}},
    ]
    if not with_segmentation:
        del anns[0]["segmentation"]
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}], "annotations": anns,
            "categories": [{"id": 3, "name": "thing"}]}
    path = tmp_path / "inst.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_polygons_and_rles_become_target_masks(tmp_path):
    ds = CocoDetection(_coco_files(tmp_path), masks=True)
    _, target = ds[0]
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (3, 40, 60)
    assert masks[1].numpy().tolist() == _rect(40, 60, 20, 30, 30, 50).tolist()
    assert masks[2].numpy().tolist() == _rect(40, 60, 0, 40, 0, 2).tolist()
    ys, xs = np.nonzero(masks[0].numpy())
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 24, 5, 14)  # pycocotools' polygon rasterisation
    # boxes-only use of the same file keeps working without decoding anything
    assert "masks" not in CocoDetection(_coco_files(tmp_path))[0][1]


def test_missing_or_bad_segmentation_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"annotation id 1 .*no 'segmentation'"):
        CocoDetection(_coco_files(tmp_path, with_segmentation=False), masks=True)
    path = _coco_files(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"][1]["segmentation"] = {"counts": "x"}
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"annotation id 2 .*polygons .* or an RLE"):
        CocoDetection(path, masks=True)


def test_augmentation_moves_masks_with_boxes():
    masks = torch.from_numpy(np.stack([_rect(40, 60, 5, 15, 5, 25), _rect(40, 60, 20, 30, 40, 60)]))
    target = {"boxes": torch.tensor([[5.0, 5, 25, 15], [40, 20, 60, 30]]), "labels": torch.tensor([1, 1]),
              "masks": masks}
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    _, flipped = RandomHorizontalFlip(1.0)(image, target)
    assert torch.equal(flipped["masks"], masks.flip(-1))
    assert flipped["boxes"][0].tolist() == [35, 5, 55, 15]
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        out_image, out = ScaleJitterCrop((32, 32), (0.5, 2.0), gen)(image, target)
        assert out["masks"].shape == (len(out["boxes"]), 32, 32)
        for box, mask in zip(out["boxes"], out["masks"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            if len(xs):  # nearest resizing: the mask's pixels lie inside its box (to a pixel)
                assert xs.min() >= box[0] - 1 and xs.max() + 1 <= box[2] + 1
                assert ys.min() >= box[1] - 1 and ys.max() + 1 <= box[3] + 1


def test_segm_ap_scores_masks_not_boxes(tmp_path):
    ds = CocoDetection(_coco_files(tmp_path), masks=True)
    gt = ds.to_coco()
    _, target = ds[0]
    boxes, labels = target["boxes"], target["labels"]
    perfect = {1: {"boxes": boxes, "labels": labels, "scores": torch.tensor([0.9, 0.8, 0.7]),
                   "segmentation": masks_to_rles(target["masks"])}}
    assert evaluate_coco(perfect, gt, ds.category_ids, iou_type="segm")["AP"] == pytest.approx(1.0)
    # same boxes, masks shifted off their objects: box AP stays 1, mask AP drops
    shifted = {1: {**perfect[1], "segmentation": masks_to_rles(target["masks"].roll(6, dims=-1))}}
    assert evaluate_coco(shifted, gt, ds.category_ids)["AP"] == pytest.approx(1.0)
    assert evaluate_coco(shifted, gt, ds.category_ids, iou_type="segm")["AP"] < 0.5
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_coco({1: {k: v for k, v in perfect[1].items() if k != "segmentation"}}, gt, ds.category_ids,
                      iou_type="segm")
    rle = masks_to_rles(target["masks"][:1])[0]
    assert np.array_equal(segmentation_to_mask(rle, 40, 60), target["masks"][0].numpy())


def test_nuclei_instances_halves_tiles_and_masks():
    train = dataset_from_path("nuclei:left", tile_size=128)
    val = dataset_from_path("nuclei:right")
    assert len(val) == 1 and len(train) == 3 * 7  # 256 x 512 half: 3 x 7 tiles at stride 64
    image, target = val[0]
    assert image.shape == (3, 512, 256) and image.dtype == torch.uint8
    masks = target["masks"]
    assert masks.shape == (len(target["boxes"]), 512, 256) and len(masks) > 40
    for box, mask in zip(target["boxes"], masks):  # boxes are the tight boxes of their masks
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert not (masks.sum(0) > 1).any()  # instances do not overlap
    coco = val.to_coco()
    assert [a["area"] for a in coco["annotations"]] == masks.sum((1, 2)).float().tolist()
    # the right half's masks come from the right half of the instance image
    from spinenet.data.nuclei import load_nuclei

    _, instances = load_nuclei()
    assert torch.equal(masks.sum(0).bool(), torch.from_numpy(instances[:, 256:] > 0))
    _, tile_target = train[4]
    assert tile_target["masks"].shape[1:] == (128, 128)
    with pytest.raises(ValueError, match="unknown half"):
        dataset_from_path("nuclei:middle")


def test_predict_draws_masks():
    image = torch.full((3, 20, 20), 100, dtype=torch.uint8)
    masks = torch.zeros(1, 1, 20, 20)
    masks[0, 0, 5:10, 5:10] = 0.9
    drawn = draw_detections(image, torch.tensor([[2.0, 2, 18, 18]]), [1], ["a"], torch.tensor([0.9]), masks=masks)
    drawn = drawn.permute(1, 2, 0).numpy()
    assert (drawn[7, 7] != 100).any() and tuple(drawn[7, 7]) != color(0)  # blended, not painted over
    assert (drawn[15, 12] == 100).all()  # outside the mask (and off the box outline) untouched
