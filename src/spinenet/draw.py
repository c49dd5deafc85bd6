"""Draw a resolved SpineNet graph the way the paper does (Du et al., CVPR 2020, Figures 1, 4 and 6).

Blocks are laid out left to right in computation order (the fixed stem first, then the scale-permuted
blocks), and each block sits at the height of its feature level, finer resolutions lower. Every parent is
joined to its block by an arrow coloured by the resampling it goes through; inputs that an output block
absorbs without resampling are dashed. The requested endpoints get a bold outline and a ``P{level}`` label.

Only matplotlib's object API is used (``Figure`` + ``FigureCanvasAgg``), so drawing never touches pyplot's
global state or needs a display. Nothing here needs torch; the registry (which builds models) is imported only
when ``draw_model`` resolves a registered name.
"""

from __future__ import annotations

import dataclasses
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch
from matplotlib.transforms import blended_transform_factory

from .graph import Graph, Node, resolve
from .specs import MOBILE_SCALING_MAP, SCALING_MAP, Architecture, Scaling

__all__ = ["SUPPORTED_SUFFIXES", "default_title", "draw_graph", "draw_model"]

SUPPORTED_SUFFIXES = {".png": "png", ".svg": "svg"}

# ---- style ------------------------------------------------------------------------------------------------
BLOCK_STYLE: dict[str, tuple[str, str, str]] = {  # block_fn -> (marker, face colour, legend label)
    "bottleneck": ("s", "#f2a65a", "bottleneck block"),
    "residual": ("o", "#7fb8a4", "residual block"),
    "mbconv": ("h", "#9db4e0", "MBConv block"),
}
STEM_FACE = "#c8c8c8"
EDGE_STYLE: dict[str, tuple[str, str]] = {  # direction -> (colour, legend label)
    "up": ("#2b6cb0", "upsample (coarse to fine)"),
    "down": ("#c53030", "downsample (fine to coarse)"),
    "same": ("#4a5568", "same resolution"),
}
NODE_EDGE = "#333333"
OUTPUT_EDGE = "#000000"

# ---- layout, in inches unless stated ----------------------------------------------------------------------
COL_IN = 0.62  # horizontal distance between consecutive blocks
ROW_IN = 0.70  # vertical distance between consecutive levels
STEM_GAP = 0.6  # extra space (in block columns) between the stem and the scale-permuted blocks
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 1.15, 0.35, 0.55, 1.15
MARKER_PT = 21.0  # marker size in points
PAD_BELOW, PAD_ABOVE = 0.65, 0.75  # axis padding in levels (room for "x2" and "P7" labels)
DPI = 150

# Curvatures tried for each edge (matplotlib's ``arc3`` rad: control-point offset / chord length).
CANDIDATE_RADS = (0.0, 0.12, -0.12, 0.22, -0.22, 0.32, -0.32, 0.42, -0.42, 0.55, -0.55)
NODE_CLEARANCE_IN = 0.24  # an edge should stay this far from the centre of a block it does not touch
LABEL_CLEARANCE_IN = 0.13


def default_title(graph: Graph) -> str:
    """The title used when none is given: ``"resnet (tpu), 17 blocks"``."""
    return f"{graph.family} ({graph.flavor}), {len(graph.nodes)} blocks"


def level_label(level: int) -> str:
    """Y tick label of a feature level: ``"L3 (1/8)"`` (the level's stride relative to the input)."""
    return f"L{level} (1/{2 ** level})"


def _direction(source_level: int, target_level: int) -> str:
    """``"down"`` (to a coarser level: downsampling), ``"up"`` (upsampling) or ``"same"``."""
    if target_level > source_level:
        return "down"
    if target_level < source_level:
        return "up"
    return "same"


@dataclass(frozen=True)
class _EdgeDraw:
    """One arrow to draw: source and target node indices, direction and whether it is an absorbed input."""

    source: int
    target: int
    direction: str
    absorbed: bool


@dataclass(frozen=True)
class _Layout:
    """Where everything goes: data positions of the blocks and the data-to-inch scale of the axes."""

    pos: dict[int, tuple[float, float]]
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    width_in: float  # axes width
    height_in: float  # axes height

    def to_inches(self, x: float, y: float) -> tuple[float, float]:
        sx = self.width_in / (self.xlim[1] - self.xlim[0])
        sy = self.height_in / (self.ylim[1] - self.ylim[0])
        return (x - self.xlim[0]) * sx, (y - self.ylim[0]) * sy


def _layout(graph: Graph) -> _Layout:
    """Blocks one column apart in order (a gap after the stem), at their level; axes sized to fit."""
    pos: dict[int, tuple[float, float]] = {}
    x = 0.0
    prev_stem: bool | None = None
    for node in graph.nodes:
        if prev_stem is True and not node.is_stem:
            x += STEM_GAP
        pos[node.index] = (x, float(node.level))
        x += 1.0
        prev_stem = node.is_stem
    levels = [n.level for n in graph.nodes] + [graph.min_level, graph.max_level]
    lo, hi = min(levels), max(levels)
    xlim = (-0.7, x - 1.0 + 0.7)
    ylim = (lo - PAD_BELOW, hi + PAD_ABOVE)
    width_in = (xlim[1] - xlim[0]) * COL_IN
    height_in = (ylim[1] - ylim[0]) * ROW_IN
    return _Layout(pos, xlim, ylim, width_in, height_in)


def _edges(graph: Graph) -> list[_EdgeDraw]:
    """Every arrow: the stem chain, each block's resampled parents and the inputs output blocks absorb."""
    present = {n.index: n for n in graph.nodes}
    out: list[_EdgeDraw] = []
    for node in graph.nodes:
        prev = present.get(node.index - 1)
        if node.is_stem and prev is not None and prev.is_stem:
            # the stem is a chain: each stem block feeds the next one
            out.append(_EdgeDraw(prev.index, node.index, _direction(prev.level, node.level), False))
        for edge in node.parents:
            out.append(_EdgeDraw(edge.source, node.index, _direction(edge.source_level, node.level), False))
        for src in node.extras:
            if src in present:
                out.append(_EdgeDraw(src, node.index, "same", True))
    return out


def _bezier(p0: tuple[float, float], p2: tuple[float, float], rad: float, samples: int = 48) -> np.ndarray:
    """``(samples + 1, 2)`` points of matplotlib's ``arc3`` quadratic curve from ``p0`` to ``p2``."""
    (x0, y0), (x2, y2) = p0, p2
    control = np.array([(x0 + x2) / 2 + rad * (y2 - y0), (y0 + y2) / 2 - rad * (x2 - x0)])
    t = np.linspace(0.0, 1.0, samples + 1)[:, None]
    return (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * control + t ** 2 * np.array(p2)


@dataclass(frozen=True)
class _Obstacle:
    """Something an edge should keep clear of (a block or a label), in axes inches."""

    x: float
    y: float
    clearance: float
    weight: float
    owner: int  # the block it is or belongs to
    is_block: bool


class _Router:
    """Chooses a curvature per edge: the straightest arc that avoids blocks, labels and earlier edges.

    Costs are evaluated on sampled points of the arc in inches, so they match what is drawn. Edges are routed
    in drawing order; each placed edge becomes a soft obstacle for the next ones (running alongside another
    edge costs a lot, a single crossing little).
    """

    def __init__(self, layout: _Layout, obstacles: Sequence[_Obstacle]) -> None:
        self.layout = layout
        self.obstacles = list(obstacles)
        self._ob_xy = np.array([(o.x, o.y) for o in obstacles], dtype=float).reshape(-1, 2)
        self._ob_clearance = np.array([o.clearance for o in obstacles], dtype=float)
        self._ob_weight = np.array([o.weight for o in obstacles], dtype=float)
        self._ob_owner = np.array([o.owner for o in obstacles], dtype=int)
        self._ob_block = np.array([o.is_block for o in obstacles], dtype=bool)
        self.placed: list[tuple[int, int, np.ndarray]] = []

    def _cost(self, edge: _EdgeDraw, pts: np.ndarray, rad: float) -> float:
        layout = self.layout
        p0, p2 = pts[0], pts[-1]
        row = layout.height_in / (layout.ylim[1] - layout.ylim[0])
        low, high = min(p0[1], p2[1]) - 0.45 * row, max(p0[1], p2[1]) + 0.45 * row
        ys = pts[:, 1]
        cost = abs(rad) * 0.5
        cost += 5.0 * np.count_nonzero((ys < 0.05) | (ys > layout.height_in - 0.05))  # leaves the axes
        cost += 0.25 * np.count_nonzero((ys < low) | (ys > high))  # bulges past the levels it connects

        if len(self.obstacles):
            own = np.isin(self._ob_owner, (edge.source, edge.target))
            # an edge may touch its own blocks; crossing their labels is hard to avoid, so it is cheap
            weight = np.where(own, self._ob_weight / 3, self._ob_weight) * ~(own & self._ob_block)
            d = np.linalg.norm(pts[:, None, :] - self._ob_xy[None, :, :], axis=2)
            overlap = np.clip((self._ob_clearance - d) / self._ob_clearance, 0.0, None)
            cost += float((overlap * weight).sum())

        if self.placed:
            end_clear = MARKER_PT / 72 * 0.75
            free = (np.linalg.norm(pts - p0, axis=1) >= end_clear) & (np.linalg.norm(pts - p2, axis=1) >= end_clear)
            mid = pts[free]  # near the end blocks, edges sharing a block converge anyway
            if len(mid):
                lo, hi = mid.min(axis=0) - 0.07, mid.max(axis=0) + 0.07
                nearby = [(s, t, p) for s, t, p in self.placed  # bounding boxes overlap
                          if (p.max(axis=0) >= lo).all() and (p.min(axis=0) <= hi).all()]
                if not nearby:
                    return float(cost)
                others = np.stack([p for _, _, p in nearby])  # (edges, samples, 2)
                shares = np.array([bool({s, t} & {edge.source, edge.target}) for s, t, _ in nearby])
                near = np.where(shares, 0.05, 0.07)[None, :, None]
                diff = np.abs(mid[:, None, None, :] - others[None, :, :, :])  # (mine, edges, samples, 2)
                close = ((diff[..., 0] < near) & (diff[..., 1] < near)).any(axis=2)
                cost += 0.3 * np.count_nonzero(close)
        return float(cost)

    def route(self, edge: _EdgeDraw) -> float:
        """The chosen ``arc3`` rad for ``edge``; the edge then counts as placed."""
        p0 = self.layout.to_inches(*self.layout.pos[edge.source])
        p2 = self.layout.to_inches(*self.layout.pos[edge.target])
        best: tuple[float, float, np.ndarray] | None = None
        for rad in CANDIDATE_RADS:  # ordered by |rad|, and |rad| is a lower bound of the cost
            if best is not None and best[0] <= abs(rad) * 0.5 + 1e-9:
                break
            pts = _bezier(p0, p2, rad)
            cost = self._cost(edge, pts, rad)
            if best is None or cost < best[0] - 1e-9:
                best = (cost, rad, pts)
        assert best is not None
        self.placed.append((edge.source, edge.target, best[2]))
        return best[1]


def _repeat_label_positions(graph: Graph, layout: _Layout) -> dict[int, tuple[float, float]]:
    """Data positions of the ``xN`` labels, just below each repeated block."""
    return {n.index: (layout.pos[n.index][0], n.level - 0.40) for n in graph.nodes if n.repeats > 1}


# Where an endpoint label may go, relative to its block (data units), in order of preference.
ENDPOINT_LABEL_OFFSETS = ((0.0, 0.42), (-0.46, 0.36), (0.46, 0.36), (0.5, -0.34), (-0.5, -0.34), (0.0, -0.42))


def _endpoint_label_positions(graph: Graph, layout: _Layout, router: _Router,
                              taken: dict[int, tuple[float, float]]) -> dict[int, tuple[float, float]]:
    """Put each ``P{level}`` label next to its block where the fewest drawn edges pass.

    ``taken`` holds labels already placed (the ``xN`` ones); blocks, other labels and the axes border are avoided.
    """
    node_pts = {n.index: layout.to_inches(*layout.pos[n.index]) for n in graph.nodes}
    edge_pts = np.concatenate([pts for _, _, pts in router.placed]) if router.placed else np.zeros((0, 2))
    occupied = [layout.to_inches(*xy) for xy in taken.values()]
    placed: dict[int, tuple[float, float]] = {}
    for level in sorted(graph.endpoints):
        idx = graph.endpoints[level]
        x0, y0 = layout.pos[idx]
        best: tuple[float, tuple[float, float]] | None = None
        for rank, (dx, dy) in enumerate(ENDPOINT_LABEL_OFFSETS):
            cand = (x0 + dx, y0 + dy)
            cx, cy = layout.to_inches(*cand)
            cost = 0.01 * rank
            if not (0.15 < cx < layout.width_in - 0.15 and 0.1 < cy < layout.height_in - 0.1):
                cost += 100.0
            cost += 100.0 * sum(math.hypot(cx - nx, cy - ny) < 0.3 for i, (nx, ny) in node_pts.items() if i != idx)
            cost += 100.0 * sum(abs(cx - ox) < 0.35 and abs(cy - oy) < 0.2 for ox, oy in occupied)
            cost += np.count_nonzero((np.abs(edge_pts[:, 0] - cx) < 0.16) & (np.abs(edge_pts[:, 1] - cy) < 0.1))
            if best is None or cost < best[0]:
                best = (cost, cand)
        assert best is not None
        placed[idx] = best[1]
        occupied.append(layout.to_inches(*best[1]))
    return placed


def _draw(graph: Graph, title: str) -> Figure:
    """Build the whole figure (axes sized from the layout, so blocks never crowd whatever the graph's size)."""
    layout = _layout(graph)
    fig_w = MARGIN_LEFT + layout.width_in + MARGIN_RIGHT
    fig_h = MARGIN_TOP + layout.height_in + MARGIN_BOTTOM
    fig = Figure(figsize=(fig_w, fig_h), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((MARGIN_LEFT / fig_w, MARGIN_BOTTOM / fig_h, layout.width_in / fig_w, layout.height_in / fig_h))
    ax.set_xlim(*layout.xlim)
    ax.set_ylim(*layout.ylim)

    levels = sorted({int(round(y)) for _, y in layout.pos.values()} | set(graph.levels))
    levels = list(range(min(levels), max(levels) + 1))
    ax.set_yticks(levels)
    ax.set_yticklabels([level_label(lv) for lv in levels], fontsize=9)
    ax.set_ylabel("feature level (resolution)", fontsize=10)
    ax.set_xticks([])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for lv in levels:
        ax.axhline(lv, color="#e6e6e6", linewidth=0.8, zorder=0)
    ax.set_title(title, fontsize=12, pad=10)

    # stem / scale-permuted regions, named under the axes
    stems = [layout.pos[n.index][0] for n in graph.nodes if n.is_stem]
    permuted = [layout.pos[n.index][0] for n in graph.nodes if not n.is_stem]
    under = blended_transform_factory(ax.transData, ax.transAxes)
    if stems and permuted:
        sep = (max(stems) + min(permuted)) / 2
        ax.axvline(sep, color="#999999", linewidth=0.9, linestyle=(0, (4, 3)), zorder=0)
    for xs, name in ((stems, "stem"), (permuted, "scale-permuted blocks")):
        if xs:
            ax.annotate(name, ((min(xs) + max(xs)) / 2, 0.0), xycoords=under, xytext=(0, -5),
                        textcoords="offset points", ha="center", va="top", fontsize=9.5, color="#444444")
    note = "blocks in computation order; number = entry index used by input_offsets"
    if any(n.repeats > 1 for n in graph.nodes):
        note += "; xN = block repeated N times"
    ax.annotate(note, (0.5, 0.0),
                xycoords="axes fraction", xytext=(0, -22), textcoords="offset points", ha="center", va="top",
                fontsize=8.5, color="#666666")

    # obstacles for edge routing: blocks and their labels
    below = _repeat_label_positions(graph, layout)
    obstacles = [_Obstacle(*layout.to_inches(*layout.pos[n.index]), NODE_CLEARANCE_IN, 10.0, n.index, True)
                 for n in graph.nodes]
    obstacles += [_Obstacle(*layout.to_inches(lx, ly), LABEL_CLEARANCE_IN, 3.0, idx, False)
                  for idx, (lx, ly) in below.items()]
    router = _Router(layout, obstacles)

    shrink = MARKER_PT / 2 + 1.5
    for edge in _edges(graph):
        rad = router.route(edge)
        colour = EDGE_STYLE[edge.direction][0]
        arrow = FancyArrowPatch(
            layout.pos[edge.source], layout.pos[edge.target], connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>", mutation_scale=9, shrinkA=shrink, shrinkB=shrink, color=colour,
            linewidth=1.6 if edge.absorbed else 1.25, linestyle=(0, (4, 2.5)) if edge.absorbed else "-",
            alpha=0.85, zorder=2)
        ax.add_patch(arrow)

    endpoint_nodes = {idx: lv for lv, idx in graph.endpoints.items()}
    above = _endpoint_label_positions(graph, layout, router, below)
    for n in graph.nodes:
        _draw_node(ax, n, layout.pos[n.index], n.index in endpoint_nodes)
    for idx, (lx, ly) in above.items():
        ax.text(lx, ly, f"P{endpoint_nodes[idx]}", ha="center", va="center", fontsize=9.5, fontweight="bold",
                zorder=6, bbox={"boxstyle": "round,pad=0.18", "facecolor": "white", "edgecolor": "none", "alpha": 0.9})
    by_index = {n.index: n for n in graph.nodes}
    for idx, (lx, ly) in below.items():
        ax.text(lx, ly, f"x{by_index[idx].repeats}", ha="center", va="center", fontsize=7.5, color="#333333",
                zorder=6, bbox={"boxstyle": "round,pad=0.12", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})

    _legend(fig, graph)
    return fig


def _draw_node(ax: Axes, node: Node, xy: tuple[float, float], is_endpoint: bool) -> None:
    """One block: marker by type (grey for the stem), bold outline for outputs (grey if not requested), index."""
    marker, face, _ = BLOCK_STYLE.get(node.block_fn, ("o", "#ffffff", node.block_fn))
    if node.is_stem:
        face = STEM_FACE
    edge_width = 2.6 if (is_endpoint or node.is_output) else 0.9
    edge_colour = OUTPUT_EDGE if is_endpoint else ("#666666" if node.is_output else NODE_EDGE)
    ax.plot([xy[0]], [xy[1]], marker=marker, markersize=MARKER_PT, markerfacecolor=face,
            markeredgecolor=edge_colour, markeredgewidth=edge_width, linestyle="none", zorder=4)
    ax.text(xy[0], xy[1], str(node.index), ha="center", va="center", fontsize=7.5, zorder=5,
            fontweight="bold" if is_endpoint else "normal")


def _legend(fig: Figure, graph: Graph) -> None:
    """Block types, stem and endpoint markers and edge kinds present in ``graph``, in two rows under the axes."""
    handles: list[Line2D] = []
    kinds = []
    for n in graph.nodes:
        if n.block_fn not in kinds:
            kinds.append(n.block_fn)
    for kind in sorted(kinds, key=lambda k: list(BLOCK_STYLE).index(k) if k in BLOCK_STYLE else 99):
        marker, face, label = BLOCK_STYLE.get(kind, ("o", "#ffffff", kind))
        handles.append(Line2D([], [], marker=marker, markersize=10, markerfacecolor=face, markeredgecolor=NODE_EDGE,
                              linestyle="none", label=label))
    if any(n.is_stem for n in graph.nodes):
        stem_marker = BLOCK_STYLE.get(graph.nodes[0].block_fn, ("o",))[0]
        handles.append(Line2D([], [], marker=stem_marker, markersize=10, markerfacecolor=STEM_FACE,
                              markeredgecolor=NODE_EDGE, linestyle="none", label="stem block"))
    out_marker = BLOCK_STYLE.get(graph.node(graph.endpoints[graph.min_level]).block_fn, ("o",))[0]
    handles.append(Line2D([], [], marker=out_marker, markersize=10, markerfacecolor="white",
                          markeredgecolor=OUTPUT_EDGE, markeredgewidth=2.4, linestyle="none",
                          label="output block (endpoint)"))
    directions = {e.direction for e in _edges(graph) if not e.absorbed}
    for direction in ("up", "down", "same"):
        if direction in directions:
            colour, label = EDGE_STYLE[direction]
            handles.append(Line2D([], [], color=colour, linewidth=1.6, label=label))
    if any(n.extras for n in graph.nodes):
        handles.append(Line2D([], [], color=EDGE_STYLE["same"][0], linewidth=1.6, linestyle=(0, (4, 2.5)),
                              label="absorbed input (no resampling)"))
    ncol = math.ceil(len(handles) / 2)
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8.5, frameon=False,
               bbox_to_anchor=(0.5 + (MARGIN_LEFT - MARGIN_RIGHT) / (2 * fig.get_figwidth()), 0.01),
               handlelength=2.2, columnspacing=1.6, handletextpad=0.5)


def _atomic_save(fig: Figure, path: Path, fmt: str) -> None:
    """Render to a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name opened exclusively ("x"), so the file gets the usual umask permissions (unlike mkstemp's 0600)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # Keep text as <text> elements in SVG (searchable, smaller) and make the output reproducible.
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "spinenet"}):
            with open(tmp, "xb") as handle:
                metadata = {"Date": None} if fmt == "svg" else {"Software": None}
                fig.savefig(handle, format=fmt, dpi=DPI, metadata=metadata, facecolor="white")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _output_format(path: Path) -> str:
    """``"png"`` or ``"svg"`` from the suffix; ``ValueError`` naming the path otherwise."""
    fmt = SUPPORTED_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot draw to {str(path)!r}: unsupported suffix {path.suffix!r}; "
                         f"use one of {', '.join(sorted(SUPPORTED_SUFFIXES))}")
    return fmt


def draw_graph(graph: Graph, path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw ``graph`` to ``path`` (PNG or SVG, chosen by the suffix) and return the path written.

    Blocks go left to right in computation order (stem blocks grey, then the scale-permuted blocks), at the
    height of their feature level; the marker shape and colour give the block type, arrows from each parent are
    coloured by resampling direction, absorbed inputs are dashed, endpoints carry a bold outline and a
    ``P{level}`` label, and ``xN`` marks repeated blocks. Blocks pruned from the graph are not drawn. Parent
    directories are created and the file is replaced atomically. Raises ``ValueError`` for other suffixes.
    """
    out = Path(path)
    fmt = _output_format(out)
    if not graph.nodes:
        raise ValueError("cannot draw an empty graph")
    fig = _draw(graph, default_title(graph) if title is None else title)
    _atomic_save(fig, out, fmt)
    return out


_FILE_OVERRIDES = frozenset({"flavor", "min_level", "max_level", "stochastic_depth_rate",
                             # accepted for symmetry with create_model; they do not change the drawing
                             "activation", "bn_eps", "bn_momentum"})


def _graph_from_file(file: Path, overrides: dict[str, Any]) -> tuple[Graph, str]:
    """Resolve a ``spinenet-arch/1`` file (its scaling or SpineNet-49's, flavour "tpu") and name it for the title."""
    arch = Architecture.load(file)
    scaling_fields = {f.name for f in dataclasses.fields(Scaling)}
    unknown = set(overrides) - _FILE_OVERRIDES - scaling_fields
    if unknown:
        raise ValueError(f"draw_model({str(file)!r}): unknown override(s) {sorted(unknown)}; "
                         f"known: {sorted(_FILE_OVERRIDES | scaling_fields)}")
    scaling = arch.scaling
    if scaling is None:
        scaling = MOBILE_SCALING_MAP["49"] if arch.family == "mobile" else SCALING_MAP["49"]
    changes = {k: v for k, v in overrides.items() if k in scaling_fields and v is not None}
    scaling = dataclasses.replace(scaling, **changes)
    graph = resolve(arch, scaling, overrides.get("flavor") or "tpu", overrides.get("min_level") or 3,
                    overrides.get("max_level") or 7, float(overrides.get("stochastic_depth_rate") or 0.0))
    return graph, arch.name or file.stem


def draw_model(name_or_file: str | os.PathLike, path: str | os.PathLike, *, title: str | None = None,
               **overrides: Any) -> Path:
    """Draw a registered model or a ``spinenet-arch/1`` JSON file to ``path`` (.png or .svg).

    A path to an existing ``.json`` file is loaded with :meth:`Architecture.load` and resolved with the file's
    scaling (SpineNet-49's for its family when the file has none) and flavour ``"tpu"`` unless overridden.
    Anything else is a registered name resolved with :func:`spinenet.registry.resolve_config`, which also
    validates ``overrides`` (``flavor``, ``min_level``, ``max_level``, scaling fields, ``block_specs``...).
    The default title names the model. This is what ``spinenet draw MODEL|FILE -o FILE`` calls.
    """
    out = Path(path)
    _output_format(out)  # fail on a bad suffix before any work
    source = Path(name_or_file)
    if source.suffix.lower() == ".json":
        if not source.is_file():
            raise FileNotFoundError(f"architecture file {source} does not exist")
        graph, label = _graph_from_file(source, overrides)
    else:
        from .registry import resolve_config  # imports torch; only needed for registered names

        cfg = resolve_config(str(name_or_file), **overrides)
        graph = resolve(cfg["architecture"], cfg["scaling"], cfg["flavor"], cfg["min_level"], cfg["max_level"],
                        cfg["stochastic_depth_rate"])
        label = cfg["name"]
    return draw_graph(graph, out, f"{label}: {default_title(graph)}" if title is None else title)
