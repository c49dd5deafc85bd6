"""The dataset catalog: every named dataset and every file format, each registered once with its task.

A dataset *spec* (``--data`` / ``--val-data``, :func:`open_dataset`) is one of

* a **name** ``<family>:<rest>``: a dataset shipped by a package, registered here by the module that builds it
  with :func:`register_dataset` (timm's ``register_model`` pattern): ``trees:<set>`` (detection; the deepforest
  tree crowns, :mod:`spinenet.data.trees`), ``nuclei:<half>`` (detection with instance masks,
  :mod:`spinenet.data.nuclei_instances`, and segmentation, :mod:`spinenet.data.segmentation`) and
  ``fashion-mnist:<split>[:N]`` (classification, :mod:`spinenet.data.classification`);
* a **path** to files in a format recognised by :func:`recognise_format`, the one place that looks at files to
  tell formats apart: a COCO ``.json`` file, a Pascal VOC folder, an MS-COCO 2017 root (with ``split``) for
  detection; an image-class folder ``ROOT/<class>/*.jpg`` for classification. The dataset classes register
  their builders with :func:`register_format`.

Detection specs take a ``[start:stop]`` suffix that keeps that slice of the images in the dataset's order
(``trees:yell-train[34:36]``, ``coco.json[:100]``). :func:`list_datasets` lists the named datasets.

Registration happens when :mod:`spinenet.data` is imported (its ``__init__`` imports every dataset module), so
the catalog itself imports no dataset module and every module here only looks downwards.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = [
    "TASKS",
    "DatasetEntry",
    "get_dataset_entry",
    "list_datasets",
    "open_dataset",
    "recognise_format",
    "register_dataset",
    "register_format",
]

TASKS = ("detection", "classification", "segmentation")
Builder = Callable[..., Any]


@dataclass(frozen=True)
class DatasetEntry:
    """One named dataset family for one task: ``build(rest, split, **kwargs)`` opens ``<family>:<rest>``.

    ``splits`` are the values ``rest`` names (listed by :func:`list_datasets`); ``syntax`` is the spec pattern
    shown in help and errors; ``source`` says which installed files it reads.
    """

    family: str
    task: str
    splits: tuple[str, ...]
    syntax: str
    source: str
    build: Builder


_NAMED: dict[tuple[str, str], DatasetEntry] = {}
_FORMATS: dict[tuple[str, str], Builder] = {}  # (task, format) -> build(path, split, **kwargs)
_FAMILY = re.compile(r"(?P<family>[a-z][a-z0-9-]*):(?P<rest>.*)", re.DOTALL)
_SLICE_SUFFIX = re.compile(r"(?P<path>.+)\[(?P<start>-?\d*):(?P<stop>-?\d*)\]", re.DOTALL)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown dataset task {task!r}; choose one of {', '.join(TASKS)}")


def register_dataset(family: str, task: str, *, splits: Sequence[str], syntax: str,
                     source: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(rest, split, **kwargs)`` as the named dataset ``<family>:...`` of ``task``.

    A family may serve several tasks (``nuclei`` is detection and segmentation), each registered once; a second
    registration of the same family and task raises ``ValueError``."""
    _check_task(task)
    if not _FAMILY.fullmatch(f"{family}:"):
        raise ValueError(f"dataset family {family!r}: use lower-case letters, digits and '-'")

    def decorator(build: Builder) -> Builder:
        if (family, task) in _NAMED:
            raise ValueError(f"named dataset {family}: is already registered for {task}")
        _NAMED[(family, task)] = DatasetEntry(family, task, tuple(splits), syntax, source, build)
        return build

    return decorator


def register_format(task: str, name: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(path, split, **kwargs)`` as the reader of the file format ``name``
    (one of :func:`recognise_format`'s answers) for ``task``."""
    _check_task(task)

    def decorator(build: Builder) -> Builder:
        if (task, name) in _FORMATS:
            raise ValueError(f"file format {name!r} is already registered for {task}")
        _FORMATS[(task, name)] = build
        return build

    return decorator


def get_dataset_entry(family: str, task: str) -> DatasetEntry:
    """The catalog entry of ``<family>:`` for ``task`` (``ValueError`` naming the known families otherwise)."""
    entry = _NAMED.get((family, task))
    if entry is None:
        known = sorted(f for f, t in _NAMED if t == task)
        raise ValueError(f"no named {task} dataset {family}:; the {task} names are {_names(known)}")
    return entry


def list_datasets(task: str | None = None) -> list[str]:
    """Every named dataset as a spec (``trees:yell-train``, ``nuclei:left``, ...), sorted; ``task`` filters.
    A name serving several tasks appears once."""
    if task is not None:
        _check_task(task)
    return sorted({f"{e.family}:{s}" for e in _NAMED.values() if task in (None, e.task) for s in e.splits})


def _names(families: Sequence[str]) -> str:
    return ", ".join(f"{f}:..." for f in families) or "none"


_PATH_FORMS = {"detection": "a COCO .json, a VOC folder", "classification": "an image folder ROOT/<class>/*.jpg"}


def _forms(task: str) -> str:
    """What ``task`` accepts, for error messages: its named datasets' syntax, then its file formats."""
    forms = [e.syntax for e in _NAMED.values() if e.task == task]
    return " or ".join(forms + ([_PATH_FORMS[task]] if task in _PATH_FORMS else [])) or "a named dataset"


def recognise_format(path: str | os.PathLike[str], task: str, split: str | None = None) -> str:
    """The file format of ``path`` for ``task``, from the files alone (no dataset is built).

    Detection: ``"coco"`` (a ``.json`` file), ``"voc"`` (a folder with ``Annotations/`` or ``.xml`` files),
    ``"coco-root"`` (a folder with ``annotations/instances_<split>.json``, the MS-COCO 2017 layout; needs
    ``split``). Classification: ``"image-folder"`` (``ROOT/<class>/<image>``). Segmentation has named datasets
    only. A path that does not exist raises ``FileNotFoundError``, one that matches no format ``ValueError``.
    """
    _check_task(task)
    p = Path(path)
    if task == "classification":
        return "image-folder"  # ImageFolder names what is missing when the folder is not one
    if task == "segmentation":
        raise ValueError(f"{os.fspath(path)!r}: unsupported segmentation data; give {_forms(task)}")
    if p.suffix.lower() == ".json":
        if not p.is_file():
            raise FileNotFoundError(f"COCO annotation file {p} does not exist")
        return "coco"
    if p.is_dir():
        if (p / "Annotations").is_dir() or any(p.glob("*.xml")):
            return "voc"
        if split is not None and (p / "annotations" / f"instances_{split}.json").is_file():
            return "coco-root"
        raise ValueError(
            f"{p}: not a recognised dataset folder. Expected a VOC root (Annotations/), a folder of VOC .xml files, "
            "or a COCO root with annotations/instances_<split>.json (pass split=...)"
        )
    if not p.exists():
        raise FileNotFoundError(f"dataset path {p} does not exist (give a COCO .json, a VOC folder, or trees:<name>)")
    raise ValueError(f"{p}: unsupported dataset file; give a COCO .json, a VOC folder, or trees:<name>")


def _slice_text(selection: slice) -> str:
    return f"{'' if selection.start is None else selection.start}:{'' if selection.stop is None else selection.stop}"


def open_dataset(spec: str | os.PathLike[str], task: str, *, split: str | None = None, **kwargs: Any) -> Any:
    """Open the dataset ``spec`` names for ``task`` (module docstring): a name, a path, and for detection an
    optional ``[start:stop]`` suffix. ``split`` selects a split of a path format (VOC ``ImageSets``, a COCO
    root) or completes a name (``trees:yell`` with ``split="val"`` is ``trees:yell-val``); the other keyword
    arguments go to the dataset's builder (``transforms``, ``classes``, ``tile_size``, ...)."""
    _check_task(task)
    text = os.fspath(spec)
    sliced = _SLICE_SUFFIX.fullmatch(text) if task == "detection" else None
    if sliced:
        selection = slice(*(int(v) if v else None for v in (sliced["start"], sliced["stop"])))
        dataset = open_dataset(sliced["path"], task, split=split, **kwargs).subset(selection)
        if not len(dataset):
            raise ValueError(f"{text}: the slice [{_slice_text(selection)}] selects no images")
        return dataset
    named = _FAMILY.fullmatch(text)
    if named and any(family == named["family"] for family, _ in _NAMED):
        family = named["family"]
        if (family, task) not in _NAMED:
            tasks = sorted(t for f, t in _NAMED if f == family)
            raise ValueError(f"{text}: {family}:... is a {' and '.join(tasks)} dataset, not {task} data; give "
                             f"{_forms(task)}")
        return _NAMED[(family, task)].build(named["rest"], split, **kwargs)
    fmt = recognise_format(text, task, split)
    build = _FORMATS.get((task, fmt))
    if build is None:  # the module that reads the format was not imported: a packaging error, not user input
        raise RuntimeError(f"no reader registered for {fmt!r} {task} data; import spinenet.data")
    return build(Path(text), split, **kwargs)
