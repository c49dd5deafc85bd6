"""Scale a learned architecture (paper section 3.4): SpineNet-96/143/190 are SpineNet-49's block list with every
block repeated and wider filters, not new searches (spec 1.5, 2.1)."""

from __future__ import annotations

import os

from ..specs import Architecture, Scaling, as_architecture


def scale_architecture(arch: Architecture | str | os.PathLike, *, block_repeats: int = 1,
                       filter_size_scale: float = 1.0, resample_alpha: float = 0.5,
                       endpoints_num_filters: int = 256) -> Architecture:
    """The same blocks with a :class:`~spinenet.specs.Scaling` attached (e.g. 96: repeats 2; 143: repeats 3,
    alpha 1.0; 190: repeats 4, scale 1.3, alpha 1.0, 512 endpoint filters -- spec 2.1)."""
    arch = as_architecture(arch)
    if block_repeats < 1:
        raise ValueError(f"--block-repeats must be >= 1, got {block_repeats}")
    if filter_size_scale <= 0 or resample_alpha <= 0 or endpoints_num_filters < 1:
        raise ValueError("--filter-size-scale and --resample-alpha must be > 0, --endpoints-num-filters >= 1")
    scaling = Scaling(endpoints_num_filters, filter_size_scale, resample_alpha, block_repeats)
    from ..graph import resolve

    resolve(arch, scaling)  # fail here, naming the block, rather than when the model is built
    return Architecture(arch.family, arch.stem, arch.blocks, scaling, arch.name)
