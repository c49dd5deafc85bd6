"""Write the legacy weights files and checkpoints of tests/data/legacy (run once, with the release they stand for).

    PYTHONPATH=src python tests/data/legacy/make_legacy.py tests/data/legacy

Each model is tiny (SpineNet-49 at filter_size_scale 1/32, resample_alpha 1, 8-wide endpoints and heads). Every
float tensor of its state is perturbed (seeded) so that BatchNorm statistics and biases differ from their initial
values, then the model is written as a ``spinenet-weights/1`` file (backbone, RetinaNet, Mask R-CNN, classifier);
the segmenter, which has no weights file in that release, as the entries of a training checkpoint that inference
reads (``{"task", "model_config", "model"}``). ``input.safetensors`` holds the one input image and
``<name>.outputs.safetensors`` the eval-mode outputs the test compares against: backbone endpoints, detector
dense outputs (backbone + RetinaNet head, or backbone + RPN head), classifier and segmenter logits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

TINY = {"filter_size_scale": 0.03125, "resample_alpha": 1.0, "endpoints_num_filters": 8}


def perturb(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=gen) * 0.05
                if key.endswith("running_var"):
                    tensor.copy_(tensor.abs() + noise.abs())
                else:
                    tensor.add_(noise)


def dense(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    out = model.macs_module()(x)
    return {f"{kind}{i}": t for kind, maps in zip(("cls", "box"), out) for i, t in enumerate(maps)}


def main(out_dir: str) -> None:
    from spinenet import create_model
    from spinenet.convert.weights import save_weights
    from spinenet.models import create_classifier, create_detector, create_segmenter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    save_file({"input": x}, str(out / "input.safetensors"))
    models = {
        "backbone": ("backbone", create_model("spinenet49", **TINY)),
        "retinanet": ("detection", create_detector("retinanet_spinenet49", num_classes=4, image_size=128,
                                                   head_width=8, head_convs=1, **TINY)),
        "maskrcnn": ("detection", create_detector("maskrcnn_spinenet49", num_classes=3, image_size=128,
                                                  head_width=8, box_fc_dim=16, **TINY)),
        "classification": ("classification", create_classifier("spinenet49", num_classes=5, **TINY)),
        "segmentation": ("segmentation", create_segmenter("spinenet49", num_classes=3, head_width=8, **TINY)),
    }
    for seed, (stem, (task, model)) in enumerate(models.items()):
        perturb(model, seed)
        model.eval()
        with torch.no_grad():
            if stem == "backbone":
                outputs = {f"p{k}": v for k, v in model(x).items()}
            elif task == "detection":
                outputs = dense(model, x)
            else:
                outputs = {"logits": model(x)}
        save_file({k: v.contiguous() for k, v in outputs.items()},
                  str(out / f"{stem}.outputs.safetensors"))
        if stem != "segmentation":
            save_weights(model, out / f"{stem}.safetensors", provenance={"source": "tests/data/legacy/make_legacy.py"})
        else:  # segmenters have no weights file in this release: the training checkpoint's model entries
            torch.save({"task": task, "model_config": model.config, "model": model.state_dict()},
                       out / f"{stem}.ckpt.pt")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent))
