"""Dataset sources: list (key, path, label) items; no pixels are decoded here.

Files with an image extension are listed even if they turn out to be corrupt:
the build decodes them (``images.load_rgb``) and records rejects with a
reason, so stored + rejected = found. Names starting with "." (``.DS_Store``,
macOS ``._x.jpg`` shadows, hidden folders) are skipped; other non-image files
are ignored.

Keys. ``key = relpath without its extension, "/" -> "_", and every character
outside [A-Za-z0-9_-] -> "_"``; relpath is relative to the dataset root and so
includes the split folder: ``train/n01440764/n01440764_10026.JPEG`` ->
``train_n01440764_n01440764_10026``. Keys are thus stable, dot-free, safe as
tar member names and unique across splits. Two files mapping to one key (e.g.
``x.jpg`` and ``x.png`` side by side) are an InputError naming both.

Limit. ``limit=N`` takes a deterministic spread across classes: round-robin
over classes in class-index order (the first image of every class, then the
second, ...), so ``--limit 1000`` on ImageNet gives one image of each class
rather than 1000 tench. Subsets are nested (limit N is within limit N+1) and
returned in the usual relpath order.

New datasets (e.g. cityscapes) register an opener in ``OPENERS``.
"""
from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ConfigError, InputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm"})
IMAGENET_LABEL_FILES = ("val_labels.txt", "LOC_val_solution.csv")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class SourceItem:
    key: str      # unique, stable, no dots; see the module docstring for the rule
    path: Path
    label: int    # class index, -1 when unlabeled
    relpath: str  # posix path relative to the root, as recorded in the store


@dataclass(frozen=True)
class Source:
    name: str
    root: Path
    split: str
    classes: list[str]
    items: list[SourceItem]  # sorted by relpath


def make_key(relpath: str) -> str:
    """The sample key for a root-relative posix path (rule in the module docstring)."""
    stem = relpath.rsplit(".", 1)[0] if "." in relpath.rsplit("/", 1)[-1] else relpath
    return _UNSAFE.sub("_", stem.replace("/", "_"))


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _visible(names) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _subdirs(folder: Path) -> list[str]:
    return _visible(e.name for e in os.scandir(folder) if e.is_dir())


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    """Image files under ``folder`` (recursively: like torchvision's ImageFolder), sorted."""
    if not recursive:
        return [folder / n for n in _visible(os.listdir(folder)) if _is_image(n) and (folder / n).is_file()]
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = _visible(dirnames)
        found += [Path(dirpath) / n for n in _visible(filenames) if _is_image(n)]
    return sorted(found)


def _make_items(root: Path, labelled: list[tuple[Path, int]]) -> list[SourceItem]:
    """SourceItems sorted by relpath; raises if two paths share a key."""
    items, seen = [], {}
    for path, label in labelled:
        rel = path.relative_to(root).as_posix()
        key = make_key(rel)
        if key in seen:
            raise InputError(f"{seen[key]} and {rel} both map to sample key {key!r} "
                             "(keys drop the extension and replace unsafe characters); rename one")
        seen[key] = rel
        items.append(SourceItem(key=key, path=path, label=label, relpath=rel))
    return sorted(items, key=lambda it: it.relpath)


def _class_folder_items(root: Path, split_dir: Path, classes: list[str]) -> list[SourceItem]:
    index = {c: i for i, c in enumerate(classes)}
    labelled = []
    for c in _subdirs(split_dir):
        if c not in index:
            raise InputError(f"Class folder {split_dir / c} is not among the {len(classes)} classes "
                             f"of {root / 'train'}; the splits must share classes")
        labelled += [(p, index[c]) for p in _images_in(split_dir / c, recursive=True)]
    return _make_items(root, labelled)


def _require_dir(folder: Path, layout: str) -> None:
    if not folder.is_dir():
        raise InputError(f"{folder} is not a directory. Expected layout: {layout}")


# --- ImageNet ---------------------------------------------------------------

IMAGENET_LAYOUT = ("ROOT/train/<synset>/*.JPEG (class index = sorted synset order); "
                   "ROOT/val/<synset>/*.JPEG, or a flat ROOT/val/*.JPEG with ROOT/val_labels.txt "
                   "('<filename> <synset-or-index>' lines) or Kaggle's ROOT/LOC_val_solution.csv")


def _open_imagenet(root: Path, split: str, label_file) -> Source:
    split_dir = root / split
    _require_dir(root, IMAGENET_LAYOUT)
    _require_dir(split_dir, IMAGENET_LAYOUT)
    train_classes = _subdirs(root / "train") if (root / "train").is_dir() else []
    folders = _subdirs(split_dir)
    flat = _images_in(split_dir, recursive=False)
    if folders and flat:
        raise InputError(f"{split_dir} has both class folders ({folders[0]}, ...) and loose images "
                         f"({flat[0].name}, ...). Expected layout: {IMAGENET_LAYOUT}")
    if folders:
        if label_file is not None:
            raise ConfigError(f"--label-file is for a flat val folder, but {split_dir} has class folders")
        classes = train_classes or folders
        return Source("imagenet", root, split, classes, _class_folder_items(root, split_dir, classes))
    if not flat:
        raise InputError(f"{split_dir} holds no images. Expected layout: {IMAGENET_LAYOUT}")
    labels = _read_imagenet_labels(_find_label_file(root, split_dir, label_file))
    classes = train_classes or sorted({v for v in labels.values() if isinstance(v, str)})
    return Source("imagenet", root, split, classes, _make_items(root, _match_labels(flat, labels, classes)))


def _find_label_file(root: Path, split_dir: Path, label_file) -> Path:
    if label_file is not None:
        path = Path(label_file).expanduser()
        if not path.is_file():
            raise InputError(f"Label file {path} does not exist")
        return path
    for name in IMAGENET_LABEL_FILES:
        if (root / name).is_file():
            return root / name
    raise InputError(f"{split_dir} is a flat folder of images but no label file was found "
                     f"(looked for {', '.join(str(root / n) for n in IMAGENET_LABEL_FILES)}). "
                     "Pass --label-file, or arrange the images in class folders.")


def _read_imagenet_labels(path: Path) -> dict[str, str | int]:
    """Map image stem -> synset (str) or 0-based class index (int).

    Plain format: ``<filename> <synset-or-index>`` per line. Kaggle format: CSV
    with header ``ImageId,PredictionString`` whose first token is the synset.
    """
    with open(path, newline="") as f:
        text = f.read()
    labels: dict[str, str | int] = {}
    if text.lstrip().startswith("ImageId"):
        rows = [(r["ImageId"], (r.get("PredictionString") or "").split()[:1])
                for r in csv.DictReader(text.splitlines())]
        rows = [(name, tok[0] if tok else "") for name, tok in rows]
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) != 2:
                raise InputError(f"{path}:{n}: expected '<filename> <synset-or-index>', got {line!r}")
            rows.append((parts[0], parts[1]))
    for name, value in rows:
        if not value:
            raise InputError(f"{path}: no label for {name}")
        stem = os.path.splitext(os.path.basename(name))[0] if _is_image(name) else os.path.basename(name)
        labels[stem] = int(value) if value.isdigit() else value
    return labels


def _match_labels(files: list[Path], labels: dict, classes: list[str]) -> list[tuple[Path, int]]:
    index = {c: i for i, c in enumerate(classes)}
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise InputError(f"{by_stem[p.stem]} and {p} share the name {p.stem!r}, so the label "
                             "file cannot tell them apart; remove one")
        by_stem[p.stem] = p
    unlabeled = [p.name for p in files if p.stem not in labels]
    if unlabeled:
        raise InputError(f"{len(unlabeled)} val image(s) have no label, e.g. {unlabeled[:3]}; "
                         "fix the label file or remove the images")
    missing = sorted(set(labels) - set(by_stem))
    if missing:
        raise InputError(f"The label file names {len(missing)} image(s) not found in the val folder, "
                         f"e.g. {missing[:3]}; is the folder complete?")
    out = []
    for stem, path in sorted(by_stem.items()):
        value = labels[stem]
        if isinstance(value, int):
            if not classes:
                raise InputError(f"The label file gives class indices (e.g. {value} for {path.name}) "
                                 "but there is no ROOT/train to name the classes; use synset labels")
            if not 0 <= value < len(classes):
                raise InputError(f"Label {value} for {path.name} is outside 0..{len(classes) - 1}")
            out.append((path, value))
        elif value in index:
            out.append((path, index[value]))
        else:
            raise InputError(f"Label {value!r} for {path.name} is not a synset of ROOT/train")
    return out


# --- ImageFolder ------------------------------------------------------------

IMAGEFOLDER_LAYOUT = ("ROOT/<split>/<class>/<image> (class index = sorted folder order), "
                      "or ROOT/<split>/<image> for unlabeled images; pass split '.' when "
                      "ROOT itself holds the class folders")


def _open_imagefolder(root: Path, split: str, label_file) -> Source:
    if label_file is not None:
        raise ConfigError("--label-file applies to --dataset imagenet only; imagefolder labels "
                          "come from class folders")
    _require_dir(root, IMAGEFOLDER_LAYOUT)
    split_dir = root / split
    if not split_dir.is_dir():
        # Never guess that ROOT is the class tree: a missing split would then
        # silently turn split folders (train/, test/) into classes.
        subdirs = _subdirs(root)
        hint = f" ROOT holds {', '.join(subdirs[:5])}{', ...' if len(subdirs) > 5 else ''}." if subdirs else ""
        raise InputError(f"{split_dir} is not a directory.{hint} Expected layout: {IMAGEFOLDER_LAYOUT}")
    classes = _subdirs(split_dir)
    loose = _images_in(split_dir, recursive=False)
    if classes and loose:
        raise InputError(f"{split_dir} has both class folders and loose images ({loose[0].name}, ...); "
                         f"the loose ones would have no class. Expected layout: {IMAGEFOLDER_LAYOUT}")
    if classes:
        labelled = [(p, i) for i, c in enumerate(classes) for p in _images_in(split_dir / c, recursive=True)]
    else:
        labelled = [(p, -1) for p in loose]
    if not labelled:
        raise InputError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {split_dir}. "
                         f"Expected layout: {IMAGEFOLDER_LAYOUT}")
    return Source("imagefolder", root, split, classes, _make_items(root, labelled))


# --- Registry ---------------------------------------------------------------

#: dataset name -> opener(root, split, label_file) -> Source (all items; open_source applies limit)
OPENERS: dict[str, Callable[[Path, str, object], Source]] = {
    "imagenet": _open_imagenet,
    "imagefolder": _open_imagefolder,
}


def open_source(dataset: str, root, split: str, *, limit: int | None = None, label_file=None) -> Source:
    """List the items of ``dataset`` at ``root``/``split``, optionally a deterministic subset of ``limit``."""
    if dataset not in OPENERS:
        raise ConfigError(f"Unknown dataset {dataset!r}: choose one of {', '.join(sorted(OPENERS))}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be a positive number of images, got {limit}")
    source = OPENERS[dataset](Path(root).expanduser(), split, label_file)
    if limit is None or limit >= len(source.items):
        return source
    return Source(source.name, source.root, source.split, source.classes, _spread(source.items, limit))


def _spread(items: list[SourceItem], limit: int) -> list[SourceItem]:
    """Round-robin over classes in index order; result in relpath order."""
    groups: dict[int, list[SourceItem]] = defaultdict(list)
    for it in items:
        groups[it.label].append(it)
    queues = [groups[label] for label in sorted(groups)]
    chosen: list[SourceItem] = []
    depth = 0
    while len(chosen) < limit:
        chosen += [q[depth] for q in queues if depth < len(q)][: limit - len(chosen)]
        depth += 1
    return sorted(chosen, key=lambda it: it.relpath)
