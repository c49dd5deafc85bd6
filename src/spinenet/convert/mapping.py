"""Name maps between our SpineNet modules and the two official TensorFlow checkpoint layouts (spec 4.2-4.3).

* TF1 (``flavor="tpu"``): name-based ``tf.layers`` scopes, numbered in creation order per scope: the ResNet
  family under ``spinenet/`` (:func:`tpu_resnet_backbone_map`), the mobile family under ``spinenet_mbconv/``
  (:func:`tpu_mobile_backbone_map`); :func:`tpu_backbone_map` picks the one for the model's family.
* Model Garden (``flavor="model_garden"``): TF2 object-based keys ``backbone/layer_with_weights-N/...`` where N is
  the position of a weight-owning layer in the Keras functional model's layer list. Keras orders that list by
  each layer's depth (longest path to an output; deepest first) and, within one depth, by first visit in a
  depth-first walk from the outputs. We replay that ordering over the graph the official code would build for
  *our* resolved graph, including every unweighted TF op that adds depth, so N is derived, never tabulated.

Both maps are lists of :class:`TensorMap` (our state-dict key, checkpoint key, layout transform).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

from ..backbone import SpineNet
from ..graph import Graph, Node

BN_VARS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))
MG_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"


@dataclass(frozen=True)
class TensorMap:
    """One tensor: our state-dict key, the checkpoint key, and how to lay it out (spec 4.1)."""

    torch_key: str
    tf_key: str
    transform: str  # "conv" (HWIO -> OIHW), "depthwise" (HWI1 -> I1HW), "dense" (IO -> OI), "copy"
    # After the transform, our entry i along axis 0 (output channel / bias index) = theirs[channel_order[i]];
    # used where the two layouts order anchors differently (TF1 RetinaNet predictors).
    channel_order: tuple[int, ...] | None = None
    # Likewise along axis 1 (a dense kernel's inputs; the TF1 Mask R-CNN fc6 reads an (h, w, c) flatten).
    in_order: tuple[int, ...] | None = None


def conv_bn(torch_prefix: str, tf_conv: str, tf_bn: str, suffix: str = "", kernel: str = "kernel",
            transform: str = "conv") -> list[TensorMap]:
    """A ConvNormAct module: ``.conv.weight`` plus the four BN tensors."""
    maps = [TensorMap(f"{torch_prefix}.conv.weight", f"{tf_conv}/{kernel}{suffix}", transform)]
    maps += [TensorMap(f"{torch_prefix}.bn.{ours}", f"{tf_bn}/{theirs}{suffix}", "copy") for ours, theirs in BN_VARS]
    return maps


def block_convs(node: Node, model: SpineNet, repeat: int) -> list[str]:
    """The ConvNormAct children of one block, in the official creation order (shortcut first)."""
    block = model.blocks[str(node.index)].block[repeat]
    names = ["shortcut"] if getattr(block, "shortcut", None) is not None else []
    return names + (["conv1", "conv2", "conv3"] if node.block_fn == "bottleneck" else ["conv1", "conv2"])


# --------------------------------------------------------------------------------------------------- TF1 (tpu)
#: The variable scope each family's TF1 builder opens (``spinenet.py`` / ``spinenet_mbconv.py`` of tensorflow/tpu).
TPU_SCOPES = {"resnet": "spinenet", "mobile": "spinenet_mbconv"}


class _Scope:
    """tf.layers auto-numbering within one variable scope.

    An unnamed TF1 layer opens ``variable_scope(None, default_name=<snake-case class name>)`` when first called,
    which numbers per enclosing scope and per kind, in call order: ``conv2d``, ``conv2d_1``, ...;
    ``batch_normalization``, ``batch_normalization_1``, ...; ``depthwise_conv2d``, ... (the counters of different
    kinds are independent).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts: dict[str, int] = {}

    def layer(self, kind: str) -> str:
        n = self.counts.get(kind, 0)
        self.counts[kind] = n + 1
        return f"{self.path}/{kind}" + ("" if n == 0 else f"_{n}")

    def next(self) -> tuple[str, str]:
        """The next (conv2d, batch_normalization) pair."""
        return self.layer("conv2d"), self.layer("batch_normalization")


def tpu_backbone_map(model: SpineNet, scope: str | None = None) -> list[TensorMap]:
    """TF1 names for either family: ``spinenet/...`` (ResNet blocks) or ``spinenet_mbconv/...`` (mobile)."""
    family = model.graph.family
    if family == "mobile":
        return tpu_mobile_backbone_map(model, scope or TPU_SCOPES["mobile"])
    return tpu_resnet_backbone_map(model, scope or TPU_SCOPES["resnet"])


def tpu_resnet_backbone_map(model: SpineNet, scope: str = "spinenet") -> list[TensorMap]:
    """TF1 ``spinenet/...`` names for a ResNet-family backbone (spec 4.3, ``tpu_spinenet49_variables.txt``)."""
    graph = model.graph
    if graph.family != "resnet":
        raise ValueError("the TF1 spinenet/ name map covers the ResNet-block family; use tpu_mobile_backbone_map "
                         "(spinenet_mbconv/ scopes) for a mobile backbone")
    maps: list[TensorMap] = []
    top = _Scope(scope)
    maps += conv_bn("stem.0", *top.next())
    num_stem = sum(1 for n in graph.nodes if n.is_stem)
    for node in graph.nodes:
        if node.is_stem:
            for r in range(node.repeats):
                for name in block_convs(node, model, r):
                    maps += conv_bn(f"blocks.{node.index}.block.{r}.{name}", *top.next())
            continue
        i = node.spec_index
        for k, edge in enumerate(node.parents):
            s = _Scope(f"{scope}/sub_policy{i}/resample_with_alpha_resample_{i}_{k}")
            prefix = f"blocks.{node.index}.resample.{k}"
            maps += conv_bn(f"{prefix}.reduce", *s.next())
            if edge.level_delta(node.level) > 0:
                maps += conv_bn(f"{prefix}.down", *s.next())
            maps += conv_bn(f"{prefix}.expand", *s.next())
        s = _Scope(f"{scope}/sub_policy{i}/scale_permuted_block_{i + num_stem}")
        for r in range(node.repeats):
            for name in block_convs(node, model, r):
                maps += conv_bn(f"blocks.{node.index}.block.{r}.{name}", *s.next())
    for level in graph.levels:
        maps += conv_bn(f"endpoints.{level}", *top.next())
    return maps


def _tpu_mbconv_map(ours: str, scope: _Scope, block) -> list[TensorMap]:
    """One TF1 ``nn_blocks.mbconv_block``: it opens no scope of its own, so its layers number on in ``scope``.

    Call order: expand ``conv2d`` + BN, ``depthwise_conv2d`` (Keras ``DepthwiseConv2D`` wrapped as a tf.layers
    layer, ``depthwise_kernel`` [3, 3, C, 1]) + BN, the squeeze-excitation ``tf.layers.Conv2D`` pair (reduce, then
    expand; ``kernel`` and ``bias``), project ``conv2d`` + BN.
    """
    maps: list[TensorMap] = []
    if block.expand is not None:
        maps += conv_bn(f"{ours}.expand", *scope.next())
    maps += conv_bn(f"{ours}.depthwise", scope.layer("depthwise_conv2d"), scope.layer("batch_normalization"),
                    kernel="depthwise_kernel", transform="depthwise")
    if block.se is not None:
        for part in ("reduce", "expand"):
            conv = scope.layer("conv2d")
            maps += [TensorMap(f"{ours}.se.{part}.weight", f"{conv}/kernel", "conv"),
                     TensorMap(f"{ours}.se.{part}.bias", f"{conv}/bias", "copy")]
    maps += conv_bn(f"{ours}.project", *scope.next())
    return maps


def tpu_mobile_backbone_map(model: SpineNet, scope: str = "spinenet_mbconv") -> list[TensorMap]:
    """TF1 ``spinenet_mbconv/...`` names for a mobile (MBConv) backbone (spec 3.14, 4.3; tensorflow/tpu
    ``spinenet_mbconv.py``).

    * ``<scope>/``: the stem 3x3 conv and BN, both stem MBConv blocks (``conv2d_1..8``, ``depthwise_conv2d``,
      ``depthwise_conv2d_1``, ``batch_normalization_1..6`` for SpineNet-Mobile-49), then the endpoint conv/BN
      pairs in level order.
    * ``<scope>/sub_policy{i}/resample_with_sepconv_resample_{i}_{k}/``: one ``depthwise_conv2d[_j]`` +
      ``batch_normalization[_j]`` per factor 2 of downsampling, then ``conv2d`` + the last BN.
    * ``<scope>/sub_policy{i}/scale_permuted_block_{i + 2}/``: the block group's MBConv layers.

    Checked on the official TF1 SpineNet-MBConv-49 fixture (``tpu_spinenet_mbconv49_backbone``: every tensor
    mapped, endpoints reproduced; tests/test_convert_tpu.py); see ``docs/weights.md``.
    """
    graph = model.graph
    if graph.family != "mobile":
        raise ValueError("the TF1 spinenet_mbconv/ name map covers the mobile family; use tpu_resnet_backbone_map "
                         "(spinenet/ scopes) for a ResNet-block backbone")
    if graph.scaling.block_repeats != 1:
        # TF1 repeats the stem blocks too (our mobile graph keeps one of each, like Model Garden), so the
        # top-scope numbering would differ; the only TF1 mobile release uses block_repeats=1.
        raise ValueError(f"TF1 spinenet_mbconv checkpoints are mapped for block_repeats=1 only (got "
                         f"{graph.scaling.block_repeats}): the TF1 code also repeats the stem blocks")
    maps: list[TensorMap] = []
    top = _Scope(scope)
    maps += conv_bn("stem.0", *top.next())
    num_stem = sum(1 for n in graph.nodes if n.is_stem)
    for node in graph.nodes:
        group = model.blocks[str(node.index)].block
        if node.is_stem:
            for r in range(node.repeats):
                maps += _tpu_mbconv_map(f"blocks.{node.index}.block.{r}", top, group[r])
            continue
        i = node.spec_index
        for k, edge in enumerate(node.parents):
            s = _Scope(f"{scope}/sub_policy{i}/resample_with_sepconv_resample_{i}_{k}")
            prefix = f"blocks.{node.index}.resample.{k}"
            for j in range(max(edge.level_delta(node.level), 0)):
                maps += conv_bn(f"{prefix}.down.{j}", s.layer("depthwise_conv2d"), s.layer("batch_normalization"),
                                kernel="depthwise_kernel", transform="depthwise")
            maps += conv_bn(f"{prefix}.expand", *s.next())
        s = _Scope(f"{scope}/sub_policy{i}/scale_permuted_block_{i + num_stem}")
        for r in range(node.repeats):
            maps += _tpu_mbconv_map(f"blocks.{node.index}.block.{r}", s, group[r])
    for level in graph.levels:
        maps += conv_bn(f"endpoints.{level}", *top.next())
    return maps


# ------------------------------------------------------------------------------------- Model Garden (Keras)
class KerasGraphReplay:
    """Replays the Keras functional graph of the official model to recover ``model.layers`` order.

    Each call to :meth:`add` is one layer with one inbound node; ``key`` marks weight-owning layers.
    """

    def __init__(self) -> None:
        self.inputs: list[list[int]] = []
        self.keys: list[object | None] = []

    def add(self, inputs: Iterable[int], key: object | None = None) -> int:
        self.inputs.append(list(inputs))
        self.keys.append(key)
        return len(self.inputs) - 1

    def op(self, *inputs: int) -> int:
        """An unweighted layer (TFOpLambda, pooling, identity)."""
        return self.add(inputs)

    def weighted_order(self, outputs: list[int]) -> list[object]:
        first_visit: dict[int, int] = {}
        post_order: list[int] = []
        done: set[int] = set()
        for out in outputs:  # iterative DFS, inputs visited in call-argument order
            stack: list[tuple[int, int]] = [(out, 0)]
            while stack:
                node, child = stack.pop()
                if child == 0:
                    if node in done:
                        continue
                    first_visit.setdefault(node, len(first_visit))
                if child < len(self.inputs[node]):
                    stack.append((node, child + 1))
                    nxt = self.inputs[node][child]
                    if nxt not in done:
                        stack.append((nxt, 0))
                else:
                    done.add(node)
                    post_order.append(node)
        depth: dict[int, int] = {}
        for node in reversed(post_order):
            d = depth.setdefault(node, 0)
            for parent in self.inputs[node]:
                depth[parent] = max(depth.get(parent, 0), d + 1)
        ordered = sorted(post_order, key=lambda n: (-depth[n], first_visit[n]))
        return [self.keys[n] for n in ordered if self.keys[n] is not None]


def _mg_nearest_upsampling(g: KerasGraphReplay, x: int) -> int:
    """``spatial_transform_ops.nearest_upsampling``: shape, two slices, reshape, multiply, two products, reshape."""
    shape = g.op(x)
    h, w = g.op(shape), g.op(shape)
    reshaped = g.op(x, h, w)
    tiled = g.op(reshaped)
    return g.op(tiled, g.op(h), g.op(w))


def mg_layer_order(graph: Graph) -> list[tuple]:
    """Weight-owning layers of the Model Garden functional model in ``layer_with_weights-N`` order.

    Keys: ("stem_conv",), ("stem_bn",), ("block", index, repeat), ("resample", index, k, part, "conv"|"bn")
    with part "reduce", "down", "down.<j>" (mobile) or "expand", and ("endpoint", level, "conv"|"bn").
    The ResNet family follows ``spinenet.py`` (TF ops for activations, ``tf.add_n``, ``tf.identity``), the
    mobile family ``spinenet_mobile.py`` (Keras Activation layers, chained ``Add`` layers, a linear Activation).
    """
    mobile = graph.family == "mobile"
    g = KerasGraphReplay()
    x = g.add([])  # Input
    x = g.add([x], ("stem_conv",))
    x = g.op(g.add([x], ("stem_bn",)))  # activation
    if not mobile:
        x = g.op(x)  # max-pool
    feats: dict[int, int] = {}
    for node in graph.nodes:
        if node.is_stem:
            for r in range(node.repeats):
                x = g.add([x], ("block", node.index, r))
            x = feats[node.index] = g.op(x)  # tf.identity / linear Activation closing the group
            continue
        parents = []
        for k, edge in enumerate(node.parents):
            y = feats[edge.source]
            delta = edge.level_delta(node.level)
            if not mobile:
                y = g.add([y], ("resample", node.index, k, "reduce", "conv"))
                y = g.op(g.add([y], ("resample", node.index, k, "reduce", "bn")))
            if delta > 0:
                for j in range(delta if mobile else 1):
                    part = f"down.{j}" if mobile else "down"
                    y = g.add([y], ("resample", node.index, k, part, "conv"))
                    y = g.op(g.add([y], ("resample", node.index, k, part, "bn")))
                if not mobile:
                    for _ in range(delta - 1):
                        y = g.op(y)  # max-pool
            elif delta < 0:
                y = _mg_nearest_upsampling(g, y)
            y = g.add([y], ("resample", node.index, k, "expand", "conv"))
            parents.append(g.add([y], ("resample", node.index, k, "expand", "bn")))
        parents += [feats[j] for j in node.extras]
        if mobile:
            y = parents[0]
            for other in parents[1:]:
                y = g.op(y, other)  # layers.Add()([y, other])
        else:
            y = g.op(*parents)  # tf.add_n
        y = g.op(y)  # activation
        for r in range(node.repeats):
            y = g.add([y], ("block", node.index, r))
        feats[node.index] = g.op(y)
    outputs = []
    for level in graph.levels:
        y = g.add([feats[graph.endpoints[level]]], ("endpoint", level, "conv"))
        outputs.append(g.op(g.add([y], ("endpoint", level, "bn"))))
    return g.weighted_order(outputs)


MG_BLOCK_ATTRS = {"shortcut": ("_shortcut", "_norm0"), "conv1": ("_conv1", "_norm1"), "conv2": ("_conv2", "_norm2"),
                  "conv3": ("_conv3", "_norm3")}


def _mg_mbconv_map(ours: str, base: str, block) -> list[TensorMap]:
    maps = []
    if block.expand is not None:
        maps += conv_bn(f"{ours}.expand", f"{base}/_conv0", f"{base}/_norm0", MG_SUFFIX)
    maps += conv_bn(f"{ours}.depthwise", f"{base}/_conv1", f"{base}/_norm1", MG_SUFFIX, kernel="depthwise_kernel",
                    transform="depthwise")
    if block.se is not None:
        for part in ("reduce", "expand"):
            se = f"{base}/_squeeze_excitation/_se_{part}"
            maps += [TensorMap(f"{ours}.se.{part}.weight", f"{se}/kernel{MG_SUFFIX}", "conv"),
                     TensorMap(f"{ours}.se.{part}.bias", f"{se}/bias{MG_SUFFIX}", "copy")]
    maps += conv_bn(f"{ours}.project", f"{base}/_conv2", f"{base}/_norm2", MG_SUFFIX)
    return maps


def mg_backbone_map(model: SpineNet, prefix: str = "backbone") -> list[TensorMap]:
    """Model Garden ``backbone/layer_with_weights-N/...`` keys for either family (spec 4.2)."""
    graph = model.graph
    maps: list[TensorMap] = []
    for n, key in enumerate(mg_layer_order(graph)):
        base = f"{prefix}/layer_with_weights-{n}"
        kind = key[0]
        if kind == "block":
            node = graph.node(key[1])
            ours = f"blocks.{key[1]}.block.{key[2]}"
            if node.block_fn == "mbconv":
                maps += _mg_mbconv_map(ours, base, model.blocks[str(key[1])].block[key[2]])
                continue
            for name in block_convs(node, model, key[2]):
                conv, norm = MG_BLOCK_ATTRS[name]
                maps += conv_bn(f"{ours}.{name}", f"{base}/{conv}", f"{base}/{norm}", MG_SUFFIX)
            continue
        if kind in ("stem_conv", "stem_bn"):
            ours, part = "stem.0", "conv" if kind == "stem_conv" else "bn"
        elif kind == "resample":
            ours, part = f"blocks.{key[1]}.resample.{key[2]}.{key[3]}", key[4]
        else:
            ours, part = f"endpoints.{key[1]}", key[2]
        if part == "conv":
            depthwise = kind == "resample" and key[3].startswith("down") and graph.family == "mobile"
            maps.append(TensorMap(f"{ours}.conv.weight",
                                  f"{base}/{'depthwise_kernel' if depthwise else 'kernel'}{MG_SUFFIX}",
                                  "depthwise" if depthwise else "conv"))
        else:
            maps += [TensorMap(f"{ours}.bn.{a}", f"{base}/{b}{MG_SUFFIX}", "copy") for a, b in BN_VARS]
    return maps


def iter_unmapped(model: SpineNet, maps: list[TensorMap]) -> Iterator[str]:
    """State-dict entries (parameters and BN statistics) that a map does not cover."""
    covered = {m.torch_key for m in maps}
    for key in model.state_dict():
        if key not in covered and not key.endswith("num_batches_tracked"):
            yield key
