"""SpineNet architecture as data: block specs, scaling maps and filter maps.

Everything here is plain frozen data (paper section 3 and the official code's tables, spec sections 1-2).
Code never branches on a model name: a model is a :class:`Architecture` (stem + scale-permuted blocks) plus a
:class:`Scaling`. The same :class:`Architecture` is what ``spinenet-arch/1`` files hold, so the search and the
converter read and write exactly what the backbone builds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

ARCH_FORMAT = "spinenet-arch/1"
BLOCK_TYPES = ("bottleneck", "residual", "mbconv")
FAMILIES = ("resnet", "mobile")
FLAVORS = ("tpu", "model_garden")


@dataclass(frozen=True)
class BlockSpec:
    """One block of the scale-permuted network (paper section 3.1).

    ``input_offsets`` index the running list of feature maps: the stem blocks first, then one entry per spec,
    so spec ``k`` of an architecture with ``s`` stem blocks creates entry ``k + s``.
    """

    level: int
    block_fn: str
    input_offsets: tuple[int, ...]
    is_output: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "block_fn": self.block_fn,
            "input_offsets": list(self.input_offsets),
            "is_output": self.is_output,
        }


@dataclass(frozen=True)
class StemBlock:
    """One block group of the fixed, scale-decreasing stem (chained in series)."""

    level: int
    block_fn: str

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "block_fn": self.block_fn}


@dataclass(frozen=True)
class Scaling:
    """Compound scaling of one family member (spec section 2)."""

    endpoints_num_filters: int
    filter_size_scale: float
    resample_alpha: float = 0.5
    block_repeats: int = 1
    se_ratio: float = 0.2  # mobile only
    expand_ratio: int = 6  # mobile only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _specs(rows: Iterable[tuple[int, str, tuple[int, int], bool]]) -> tuple[BlockSpec, ...]:
    return tuple(BlockSpec(level, fn, tuple(offsets), out) for level, fn, offsets, out in rows)


# The learned SpineNet-49 permutation (spec 1.2). The last row, the level-2 output block, exists only in the
# current Model Garden code; the TF1 (TPU) code, whose checkpoints the paper reports, has the first 15.
SPINENET_BLOCK_SPECS: tuple[BlockSpec, ...] = _specs([
    (2, "bottleneck", (0, 1), False),
    (4, "residual", (0, 1), False),
    (3, "bottleneck", (2, 3), False),
    (4, "bottleneck", (2, 4), False),
    (6, "residual", (3, 5), False),
    (4, "bottleneck", (3, 5), False),
    (5, "residual", (6, 7), False),
    (7, "residual", (6, 8), False),
    (5, "bottleneck", (8, 9), False),
    (5, "bottleneck", (8, 10), False),
    (4, "bottleneck", (5, 10), True),
    (3, "bottleneck", (4, 10), True),
    (5, "bottleneck", (7, 12), True),
    (7, "bottleneck", (5, 14), True),
    (6, "bottleneck", (12, 14), True),
    (2, "bottleneck", (2, 13), True),
])
TPU_NUM_SPECS = 15

# SpineNet-Mobile (spec 1.4): the SpineNet-49 topology behind an MBConv stem with one extra level-2 block.
MOBILE_BLOCK_SPECS: tuple[BlockSpec, ...] = _specs([
    (2, "mbconv", (0, 1), False),
    (2, "mbconv", (1, 2), False),
    (4, "mbconv", (1, 2), False),
    (3, "mbconv", (3, 4), False),
    (4, "mbconv", (3, 5), False),
    (6, "mbconv", (4, 6), False),
    (4, "mbconv", (4, 6), False),
    (5, "mbconv", (7, 8), False),
    (7, "mbconv", (7, 9), False),
    (5, "mbconv", (9, 10), False),
    (5, "mbconv", (9, 11), False),
    (4, "mbconv", (6, 11), True),
    (3, "mbconv", (5, 11), True),
    (5, "mbconv", (8, 13), True),
    (7, "mbconv", (6, 15), True),
    (6, "mbconv", (13, 15), True),
])

RESNET_STEM: tuple[StemBlock, ...] = (StemBlock(2, "bottleneck"), StemBlock(2, "bottleneck"))
MOBILE_STEM: tuple[StemBlock, ...] = (StemBlock(1, "mbconv"), StemBlock(2, "mbconv"))

# Base filters C per level; a bottleneck outputs 4C (spec 2.1, 2.2).
FILTER_SIZE_MAP: Mapping[int, int] = {1: 32, 2: 64, 3: 128, 4: 256, 5: 256, 6: 256, 7: 256}
MOBILE_FILTER_SIZE_MAP: Mapping[int, int] = {0: 8, 1: 16, 2: 24, 3: 40, 4: 80, 5: 112, 6: 112, 7: 112}
STEM_FILTERS = 64  # the 7x7 stem conv of the ResNet family is never scaled

SCALING_MAP: Mapping[str, Scaling] = {
    "49S": Scaling(128, 0.65, 0.5, 1),
    "49": Scaling(256, 1.0, 0.5, 1),
    "96": Scaling(256, 1.0, 0.5, 2),
    "143": Scaling(256, 1.0, 1.0, 3),
    "143L": Scaling(256, 1.3, 1.0, 3),
    "190": Scaling(512, 1.3, 1.0, 4),
}
MOBILE_SCALING_MAP: Mapping[str, Scaling] = {
    "49": Scaling(48, 1.0, block_repeats=1),
    "49S": Scaling(40, 0.65, block_repeats=1),
    "49XS": Scaling(24, 0.6, block_repeats=1),
}

MIN_BLOCK_LEVEL = 2
MAX_BLOCK_LEVEL = 7


@dataclass(frozen=True)
class Architecture:
    """A stem plus an ordered list of scale-permuted blocks: the content of a ``spinenet-arch/1`` file."""

    family: str
    stem: tuple[StemBlock, ...]
    blocks: tuple[BlockSpec, ...]
    scaling: Scaling | None = None
    name: str | None = field(default=None, compare=False)
    source: str | None = field(default=None, compare=False)  # the file it was read from: graph errors name it

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": ARCH_FORMAT,
            "family": self.family,
            "stem": [s.to_dict() for s in self.stem],
            "blocks": [b.to_dict() for b in self.blocks],
        }
        if self.name:
            out["name"] = self.name
        if self.scaling is not None:
            out["scaling"] = self.scaling.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "architecture") -> "Architecture":
        """Parse and type-check a ``spinenet-arch/1`` mapping; topology is checked by :mod:`spinenet.graph`."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}")
        fmt = data.get("format")
        if fmt != ARCH_FORMAT:
            raise ValueError(f"{source}: field 'format' is {fmt!r}; expected {ARCH_FORMAT!r}")
        family = data.get("family", "resnet")
        if family not in FAMILIES:
            raise ValueError(f"{source}: field 'family' is {family!r}; expected one of {FAMILIES}")
        default_stem = RESNET_STEM if family == "resnet" else MOBILE_STEM
        stem_rows = data.get("stem", [s.to_dict() for s in default_stem])
        stem = tuple(_parse_stem(row, f"{source}: stem[{i}]") for i, row in enumerate(_as_list(stem_rows, source, "stem")))
        blocks = tuple(_parse_block(row, f"{source}: blocks[{i}]") for i, row in enumerate(_as_list(data.get("blocks"), source, "blocks")))
        scaling = None
        if data.get("scaling") is not None:
            scaling = _parse_scaling(data["scaling"], f"{source}: scaling")
        unknown = set(data) - {"format", "family", "stem", "blocks", "scaling", "name"}
        if unknown:
            raise ValueError(f"{source}: unknown field(s) {sorted(unknown)}")
        return cls(family, stem, blocks, scaling, data.get("name"))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file + rename) as indented JSON."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Architecture":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"architecture file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
        return dataclasses.replace(cls.from_dict(data, source=str(path)), source=str(path))


def _as_list(value: Any, source: str, name: str) -> list:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{source}: field '{name}' must be a non-empty list")
    return value


def _require(row: Any, source: str, keys: dict[str, type | tuple[type, ...]]) -> None:
    if not isinstance(row, Mapping):
        raise ValueError(f"{source}: expected an object, got {type(row).__name__}")
    for key, typ in keys.items():
        if key not in row:
            raise ValueError(f"{source}: missing field '{key}'")
        value = row[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise ValueError(f"{source}: field '{key}' has the wrong type ({value!r})")


def _parse_stem(row: Any, source: str) -> StemBlock:
    _require(row, source, {"level": int, "block_fn": str})
    return StemBlock(row["level"], row["block_fn"])


def _parse_block(row: Any, source: str) -> BlockSpec:
    _require(row, source, {"level": int, "block_fn": str, "input_offsets": list, "is_output": bool})
    offsets = row["input_offsets"]
    if not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets):
        raise ValueError(f"{source}: 'input_offsets' must be integers, got {offsets!r}")
    return BlockSpec(row["level"], row["block_fn"], tuple(offsets), row["is_output"])


def _parse_scaling(row: Any, source: str) -> Scaling:
    if not isinstance(row, Mapping):
        raise ValueError(f"{source}: expected an object")
    names = set(Scaling.__dataclass_fields__)
    unknown = set(row) - names
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {sorted(unknown)}; expected some of {sorted(names)}")
    required = [name for name, f in Scaling.__dataclass_fields__.items() if f.default is dataclasses.MISSING]
    missing = [name for name in required if name not in row]
    if missing:
        raise ValueError(f"{source}: missing field(s) {missing}; a scaling block needs {' and '.join(required)} "
                         f"(optional: {', '.join(sorted(names - set(required)))}), or leave 'scaling' out")
    for key, value in row.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{source}: field '{key}' must be a number, got {value!r}")
    return Scaling(**row)


def default_architecture(family: str, flavor: str) -> Architecture:
    """The official block list for a family as the given implementation builds it (spec 9)."""
    if family == "mobile":
        return Architecture("mobile", MOBILE_STEM, MOBILE_BLOCK_SPECS, name="spinenet-mobile")
    blocks = SPINENET_BLOCK_SPECS if flavor == "model_garden" else SPINENET_BLOCK_SPECS[:TPU_NUM_SPECS]
    return Architecture("resnet", RESNET_STEM, blocks, name="spinenet")


def as_architecture(value: Any, family: str = "resnet") -> Architecture:
    """Accept an Architecture, a path to a ``spinenet-arch/1`` file, a mapping, or a list of spec tuples."""
    if isinstance(value, Architecture):
        return value
    if isinstance(value, (str, os.PathLike)):
        return Architecture.load(value)
    if isinstance(value, Mapping):
        return Architecture.from_dict(value)
    if isinstance(value, (list, tuple)):
        blocks = []
        for i, row in enumerate(value):
            if isinstance(row, BlockSpec):
                blocks.append(row)
            elif isinstance(row, Mapping):
                blocks.append(_parse_block(row, f"block_specs[{i}]"))
            elif isinstance(row, (list, tuple)) and len(row) == 4:
                level, fn, offsets, out = row
                blocks.append(BlockSpec(level, fn, tuple(offsets), out))
            else:
                raise ValueError(f"block_specs[{i}]: expected (level, block_fn, input_offsets, is_output), got {row!r}")
        stem = RESNET_STEM if family == "resnet" else MOBILE_STEM
        return Architecture(family, stem, tuple(blocks))
    raise ValueError(f"block_specs: cannot read an architecture from {type(value).__name__}")
