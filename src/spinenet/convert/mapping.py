"""Name maps between our SpineNet modules and the two official TensorFlow checkpoint layouts (spec 4.2-4.3).

* TF1 (``flavor="tpu"``): name-based ``tf.layers`` scopes, numbered in creation order per scope.
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
class _Scope:
    """tf.layers auto-numbering within one variable scope: conv2d, conv2d_1, ...; batch_normalization, ..."""

    def __init__(self, path: str) -> None:
        self.path, self.count = path, 0

    def next(self) -> tuple[str, str]:
        suffix = "" if self.count == 0 else f"_{self.count}"
        self.count += 1
        return f"{self.path}/conv2d{suffix}", f"{self.path}/batch_normalization{suffix}"


def tpu_backbone_map(model: SpineNet, scope: str = "spinenet") -> list[TensorMap]:
    """TF1 ``spinenet/...`` names for a ResNet-family backbone (spec 4.3, ``tpu_spinenet49_variables.txt``)."""
    graph = model.graph
    if graph.family != "resnet":
        raise ValueError("the TF1 name map covers the ResNet-block family; mobile uses spinenet_mbconv scopes")
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
