"""Dataset sources: list (key, path, label) items; no pixels are decoded here.

Files with an image extension are listed even if they turn out to be corrupt:
the build decodes them (``images.load_rgb``) and records rejects with a
reason, so stored + rejected = found. Names starting with "." (``.DS_Store``,
macOS ``._x.jpg`` shadows, hidden folders) are skipped; other non-image files
are ignored.

Keys. ``key = relpath without its extension, "/" -> "_", every other ASCII
character outside [A-Za-z0-9_-] -> "_", and every non-ASCII character ->
"-u<hex code point>-"`` (so class and file names in any script stay distinct;
labels and the class list keep the real names); relpath is relative to the dataset root and so
includes the split folder: ``train/n01440764/n01440764_10026.JPEG`` ->
``train_n01440764_n01440764_10026``. Keys are thus stable, dot-free, safe as
tar member names and unique across splits. Two files mapping to one key (e.g.
``x.jpg`` and ``x.png`` side by side) are an InputError naming both.

Limit. ``limit=N`` takes a deterministic spread across classes: round-robin
over classes in class-index order (the first image of every class, then the
second, ...), so ``--limit 1000`` on ImageNet gives one image of each class
rather than 1000 tench. Subsets are nested (limit N is within limit N+1) and
returned in the usual relpath order.

Links. Folders are walked following links, but a linked folder whose target
lies inside the folder being walked (a loop such as ``up -> ..``, or an
alias of another class) or was already visited is skipped, and so is a
linked file whose target was already listed: no file is listed twice or
under another class. Each skip is a warning that names the link.

New datasets (e.g. cityscapes) register an opener in ``OPENERS``.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import stat
import warnings
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError, InputError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm"})
IMAGENET_LABEL_FILES = ("val_labels.txt", "LOC_val_solution.csv")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class SourceItem:
    key: str      # unique, stable, no dots; see the module docstring for the rule
    path: Path
    label: int    # class index, -1 when unlabeled
    relpath: str  # posix path relative to the root, as recorded in the store
    label_path: Path | None = None  # segmentation: the label map that shares the image's geometry


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
    return _UNSAFE.sub(lambda m: "_" if ord(m[0]) < 128 else f"-u{ord(m[0]):x}-", stem.replace("/", "_"))


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _visible(names) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _subdirs(folder: Path) -> list[str]:
    return _visible(e.name for e in os.scandir(folder) if e.is_dir())


def _images_in(folder: Path, recursive: bool, tree: Path | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively: like torchvision's ImageFolder), sorted.

    ``tree`` (default: ``folder``) is the whole listing's folder: links into it are not followed.
    """
    if not recursive:   # anything but a folder: a FIFO or device named like an image is listed, then rejected
        return [folder / n for n in _visible(os.listdir(folder)) if _is_image(n) and not (folder / n).is_dir()]
    found, seen_dirs, seen_files = [], {_identity(folder)}, set()
    inside = os.path.realpath(tree or folder)
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        kept = []
        for name in _visible(dirnames):
            path = Path(dirpath) / name
            ident = _identity(path)
            if path.is_symlink() and (_within(os.path.realpath(path), inside) or ident in seen_dirs):
                warnings.warn(f"{path} links to {os.path.realpath(path)}, inside {folder} or already listed: "
                              "skipped, so no image is listed twice or under another folder", stacklevel=2)
                continue
            if ident in seen_dirs:
                continue
            seen_dirs.add(ident)
            kept.append(name)
        dirnames[:] = kept
        for name in _visible(filenames):
            path = Path(dirpath) / name
            if not _is_image(name):
                continue
            ident = _identity(path)
            if ident in seen_files:
                warnings.warn(f"{path} is a link to an image already listed ({os.path.realpath(path)}): skipped",
                              stacklevel=2)
                continue
            seen_files.add(ident)
            found.append(path)
    return sorted(found)


def _identity(path: Path):
    """(device, inode) of what `path` points to; its real path if it cannot be stat'ed."""
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.realpath(path)


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


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
        labelled += [(p, index[c]) for p in _images_in(split_dir / c, recursive=True, tree=split_dir)]
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
        labelled = [(p, i) for i, c in enumerate(classes)
                    for p in _images_in(split_dir / c, recursive=True, tree=split_dir)]
    else:
        labelled = [(p, -1) for p in loose]
    if not labelled:
        raise InputError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {split_dir}. "
                         f"Expected layout: {IMAGEFOLDER_LAYOUT}")
    return Source("imagefolder", root, split, classes, _make_items(root, labelled))


# --- Cityscapes -------------------------------------------------------------

CITYSCAPES_LAYOUT = ("ROOT/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png with "
                     "ROOT/gtFine/<split>/<city>/<name>_gtFine_labelTrainIds.png (preferred, e.g. made by "
                     "cityscapesscripts' createTrainIdLabelImgs) or <name>_gtFine_labelIds.png")
IGNORE_INDEX = 255
#: Cityscapes labels (cityscapesscripts/helpers/labels.py): (labelId, name, trainId). The one table
#: behind both the class list and the labelIds -> trainIds lookup; license plate (id -1) is 255 here.
CITYSCAPES_LABELS = (
    (0, "unlabeled", 255), (1, "ego vehicle", 255), (2, "rectification border", 255),
    (3, "out of roi", 255), (4, "static", 255), (5, "dynamic", 255), (6, "ground", 255),
    (7, "road", 0), (8, "sidewalk", 1), (9, "parking", 255), (10, "rail track", 255),
    (11, "building", 2), (12, "wall", 3), (13, "fence", 4), (14, "guard rail", 255),
    (15, "bridge", 255), (16, "tunnel", 255), (17, "pole", 5), (18, "polegroup", 255),
    (19, "traffic light", 6), (20, "traffic sign", 7), (21, "vegetation", 8), (22, "terrain", 9),
    (23, "sky", 10), (24, "person", 11), (25, "rider", 12), (26, "car", 13), (27, "truck", 14),
    (28, "bus", 15), (29, "caravan", 255), (30, "trailer", 255), (31, "train", 16),
    (32, "motorcycle", 17), (33, "bicycle", 18), (255, "license plate", 255),
)
CITYSCAPES_CLASSES = [name for _, name, train in sorted(CITYSCAPES_LABELS, key=lambda r: r[2]) if train != 255]
#: 256-entry lookups, -1 where a value is not a valid id (an error naming the file, never a guess).
LABEL_ID_TO_TRAIN_ID = np.full(256, -1, dtype=np.int16)
for _id, _name, _train in CITYSCAPES_LABELS:
    LABEL_ID_TO_TRAIN_ID[_id] = _train
TRAIN_ID_CHECK = np.full(256, -1, dtype=np.int16)
TRAIN_ID_CHECK[list(range(len(CITYSCAPES_CLASSES))) + [IGNORE_INDEX]] = \
    list(range(len(CITYSCAPES_CLASSES))) + [IGNORE_INDEX]
_IMAGE_SUFFIX = "_leftImg8bit.png"
_LABEL_SUFFIXES = ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png")  # preferred first


def _open_cityscapes(root: Path, split: str, label_file) -> Source:
    if label_file is not None:
        raise ConfigError("--label-file does not apply to cityscapes: label maps come from ROOT/gtFine")
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    _require_dir(image_dir, CITYSCAPES_LAYOUT)
    _require_dir(label_dir, CITYSCAPES_LAYOUT)
    labelled, used = [], set()
    for path in _images_in(image_dir, recursive=True):
        rel = path.relative_to(image_dir)
        if not path.name.endswith(_IMAGE_SUFFIX):
            raise InputError(f"{path} is not a Cityscapes image (<name>{_IMAGE_SUFFIX}): remove it. "
                             f"Expected layout: {CITYSCAPES_LAYOUT}")
        stem = path.name[: -len(_IMAGE_SUFFIX)]
        candidates = [label_dir / rel.parent / f"{stem}{suffix}" for suffix in _LABEL_SUFFIXES]
        label = next((c for c in candidates if c.is_file()), None)
        if label is None:
            raise InputError(f"No label map for {path}: expected {candidates[0]} or {candidates[1]}. "
                             "Nothing is skipped silently: restore the file or remove the image.")
        used.add((rel.parent / stem).as_posix())
        labelled.append((path, label))
    if not labelled:
        raise InputError(f"No *{_IMAGE_SUFFIX} images under {image_dir}. Expected layout: {CITYSCAPES_LAYOUT}")
    for suffix in _LABEL_SUFFIXES:
        orphans = [p for p in sorted(label_dir.rglob(f"*{suffix}"))
                   if (p.relative_to(label_dir).parent / p.name[: -len(suffix)]).as_posix() not in used]
        if orphans:
            raise InputError(f"{len(orphans)} label map(s) have no image, e.g. {orphans[0]} (expected "
                             f"{image_dir / orphans[0].relative_to(label_dir).parent}/<name>{_IMAGE_SUFFIX}); "
                             "the image and label trees do not match")
    items = _make_items(root, [(p, -1) for p, _ in labelled])
    labels = {p.relative_to(root).as_posix(): lab for p, lab in labelled}
    items = [replace(it, label_path=labels[it.relpath]) for it in items]
    return Source("cityscapes", root, split, list(CITYSCAPES_CLASSES), items)


def load_label_map(item: SourceItem, size: tuple[int, int]):
    """The train-id label map (PIL mode "L", 255 = ignore) of a segmentation item whose image is `size`.

    labelIds are mapped through LABEL_ID_TO_TRAIN_ID; labelTrainIds are used as
    they are. A label map of another size or mode, or with a value that is no
    valid id, is an InputError naming the file.
    """
    from PIL import Image

    path = item.label_path
    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, ValueError) as exc:
        raise InputError(f"Label map {path} cannot be read ({exc}); restore it") from exc
    if img.mode not in ("L", "P"):
        raise InputError(f"Label map {path} has mode {img.mode}; expected 8-bit ids (mode L)")
    if img.size != tuple(size):
        raise InputError(f"Label map {path} is {img.size[0]}x{img.size[1]} but its image {item.path} is "
                         f"{size[0]}x{size[1]}: mismatched label file")
    ids = np.asarray(img, dtype=np.uint8)
    lut = TRAIN_ID_CHECK if path.name.endswith(_LABEL_SUFFIXES[0]) else LABEL_ID_TO_TRAIN_ID
    train = lut[ids]
    if (train < 0).any():
        bad = sorted(set(ids[train < 0].tolist()))[:10]
        raise InputError(f"Label map {path} holds values {bad} that are not "
                         f"{'train ids (0-18, 255)' if lut is TRAIN_ID_CHECK else 'Cityscapes labelIds (0-33)'}")
    return Image.fromarray(train.astype(np.uint8), mode="L")


# --- Fingerprints -----------------------------------------------------------

def file_fingerprint(path: Path) -> dict | None:
    """{"bytes", "mtime_ns", "sha256"} of one source file, None when it cannot be read."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would block or never end: never opened
            return None
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}


def fingerprint(item: SourceItem) -> dict:
    """What a commit record keeps of an item's source: its image file (and label map) fingerprints."""
    fp = {"image": file_fingerprint(item.path)}
    if item.label_path is not None:
        fp["label"] = file_fingerprint(item.label_path)
    return fp


def _same_file(path: Path, recorded: dict | None) -> bool:
    """Size and mtime decide when they agree; an mtime changed by a copy falls back to the sha256."""
    if recorded is None:
        return not path.is_file()
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size != recorded["bytes"]:
        return False
    if st.st_mtime_ns == recorded["mtime_ns"]:
        return True
    current = file_fingerprint(path)
    return current is not None and current["sha256"] == recorded["sha256"]


def source_changes(items: list[SourceItem], keys: list[str], fingerprints: list | None) -> str | None:
    """Why a committed group no longer matches today's `items`, or None when it still does.

    `keys` and `fingerprints` come from the group's commit record: a record without fingerprints
    cannot show that its images are unchanged, so it does not match.
    """
    now = [it.key for it in items]
    if now != list(keys):
        gone, new = sorted(set(keys) - set(now)), sorted(set(now) - set(keys))
        detail = (f"{len(gone)} gone (e.g. {gone[0]})" if gone else "") + \
                 (", " if gone and new else "") + (f"{len(new)} new (e.g. {new[0]})" if new else "")
        return f"its images changed: {detail or 'another order'}"
    if not isinstance(fingerprints, list):
        return "its commit record holds no fingerprints of its source files (a damaged record)"
    for item, fp in zip(items, fingerprints):
        if not _same_file(item.path, fp["image"]):
            return f"{item.relpath} changed since it was encoded"
        if item.label_path is not None and not _same_file(item.label_path, fp.get("label")):
            return f"the label map of {item.relpath} changed since it was encoded"
    return None


def listing_digest(items: list[SourceItem]) -> str:
    """sha256 of a split's item keys in order: parts of one build must agree on it."""
    return hashlib.sha256("\n".join(it.key for it in items).encode()).hexdigest()


# --- Registry ---------------------------------------------------------------

#: dataset name -> opener(root, split, label_file) -> Source (all items; open_source applies limit)
OPENERS: dict[str, Callable[[Path, str, object], Source]] = {
    "imagenet": _open_imagenet,
    "imagefolder": _open_imagefolder,
    "cityscapes": _open_cityscapes,
}
#: datasets whose items carry a label map: they default to the seg-train / seg-val augmentation
SEGMENTATION = frozenset({"cityscapes"})


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
