"""Tests for spinenet.draw: file formats, labels, architecture files and the mobile family."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from spinenet.draw import default_title, draw_graph, draw_model
from spinenet.graph import Graph, resolve
from spinenet.specs import SCALING_MAP, Architecture, default_architecture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def graph49() -> Graph:
    return resolve(default_architecture("resnet", "tpu"), SCALING_MAP["49"], "tpu")


def _svg_texts(svg: str) -> list[str]:
    """The contents of the <text> elements (matplotlib writes them with svg.fonttype='none')."""
    return [re.sub(r"<[^>]+>", "", t).strip() for t in re.findall(r"<text\b[^>]*>(.*?)</text>", svg, flags=re.S)]


def test_png_is_valid(tmp_path: Path, graph49: Graph) -> None:
    out = draw_graph(graph49, tmp_path / "nested" / "dir" / "g.png")  # parent directories are created
    assert out == tmp_path / "nested" / "dir" / "g.png"
    assert out.read_bytes()[:8] == PNG_MAGIC
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        width, height = img.size
    assert width > 0 and height > 0
    assert width > height  # blocks run left to right
    assert [p.name for p in out.parent.iterdir()] == ["g.png"]  # no temp file left behind


@pytest.fixture(scope="module")
def svg49(tmp_path_factory: pytest.TempPathFactory, graph49: Graph) -> str:
    out = draw_graph(graph49, str(tmp_path_factory.mktemp("svg") / "g.svg"))  # str paths work too
    return out.read_text()


def test_svg_labels_each_endpoint_once(svg49: str, graph49: Graph) -> None:
    assert "<svg" in svg49
    texts = _svg_texts(svg49)
    for level in range(3, 8):
        assert texts.count(f"P{level}") == 1, (level, texts)
    assert "P2" not in texts
    assert default_title(graph49) == "resnet (tpu), 17 blocks"
    assert default_title(graph49) in texts
    assert "L3 (1/8)" in texts and "L7 (1/128)" in texts
    assert "x2" not in texts  # SpineNet-49 repeats every block once


def test_svg_shows_every_block_and_legend(svg49: str, graph49: Graph) -> None:
    texts = _svg_texts(svg49)
    for node in graph49.nodes:
        assert str(node.index) in texts
    for label in ("bottleneck block", "residual block", "stem block", "absorbed input (no resampling)",
                  "upsample (coarse to fine)", "downsample (fine to coarse)", "same resolution"):
        assert label in texts
    assert "MBConv block" not in texts


def test_custom_title_replaces_existing_file(tmp_path: Path, graph49: Graph) -> None:
    path = tmp_path / "g.svg"
    path.write_text("old content")
    assert draw_graph(graph49, path, title="my title") == path
    texts = _svg_texts(path.read_text())
    assert "my title" in texts and default_title(graph49) not in texts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.svg"]


@pytest.mark.parametrize("name", ["g.pdf", "g.jpg", "g", "g.png.txt"])
def test_bad_suffix_raises(tmp_path: Path, graph49: Graph, name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(name)):
        draw_graph(graph49, tmp_path / name)
    with pytest.raises(ValueError, match=re.escape(name)):
        draw_model("spinenet49", tmp_path / name)
    assert not any(tmp_path.iterdir())


def test_architecture_file_round_trip(tmp_path: Path) -> None:
    arch = Architecture("resnet", default_architecture("resnet", "tpu").stem,
                        default_architecture("resnet", "tpu").blocks, SCALING_MAP["96"], name="my-arch")
    arch_file = tmp_path / "arch.json"
    arch.save(arch_file)
    assert Architecture.load(arch_file) == arch
    out = draw_model(str(arch_file), tmp_path / "arch.svg")
    texts = _svg_texts(out.read_text())
    assert "my-arch: resnet (tpu), 17 blocks" in texts
    assert texts.count("x2") == 17  # SpineNet-96 scaling from the file: every block repeated twice
    for level in range(3, 8):
        assert texts.count(f"P{level}") == 1


def test_architecture_file_defaults_overrides_and_pruning(tmp_path: Path) -> None:
    arch_file = tmp_path / "plain.json"
    default_architecture("resnet", "model_garden").save(arch_file)  # no scaling in the file: SpineNet-49's
    # Model Garden's list ends with a level-2 output block (entry 17): pruned for P3-P7, so not drawn
    graph = resolve(Architecture.load(arch_file), SCALING_MAP["49"], "model_garden")
    assert len(graph.nodes) == 17 and all(n.index != 17 for n in graph.nodes)
    texts = _svg_texts(draw_model(arch_file, tmp_path / "p3.svg", flavor="model_garden").read_text())
    assert "spinenet: resnet (model_garden), 17 blocks" in texts
    assert "17" not in texts and "16" in texts and "P2" not in texts and "x2" not in texts
    with pytest.raises(ValueError, match="unknown override"):
        draw_model(arch_file, tmp_path / "bad.png", not_a_setting=1)
    with pytest.raises(FileNotFoundError):
        draw_model(str(tmp_path / "missing.json"), tmp_path / "missing.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p3.svg", "plain.json"]


def test_mobile_model_draws(tmp_path: Path) -> None:
    texts = _svg_texts(draw_model("spinenet_mobile49", tmp_path / "mobile.svg").read_text())
    assert "spinenet_mobile49: mobile (model_garden), 18 blocks" in texts
    assert "L1 (1/2)" in texts  # the mobile stem starts at level 1
    assert "MBConv block" in texts and "bottleneck block" not in texts
    for level in range(3, 8):
        assert texts.count(f"P{level}") == 1


def test_unknown_model_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown model"):
        draw_model("spinenet_nope", tmp_path / "x.png")


def test_failed_render_leaves_nothing_behind(tmp_path: Path, graph49: Graph, monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.figure import Figure

    def broken(self: Figure, *args: object, **kwargs: object) -> None:
        raise RuntimeError("renderer failed")

    path = tmp_path / "g.png"
    path.write_bytes(b"previous")
    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="renderer failed"):
        draw_graph(graph49, path)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]
