"""Dataset sources on tiny real trees written to tmp_path."""
from pathlib import Path

import pytest
from PIL import Image

import latentstore
from latentstore.build.sources import OPENERS, make_key, open_source
from latentstore.errors import ConfigError, InputError

DEMO = Path(latentstore.__file__).parent / "data" / "demo-imagenet"
SYNSETS = ["n01440764", "n01443537", "n01484850"]


def _img(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (len(path.name), 0, 0)).save(path, format="JPEG")
    return path


def _imagenet(root: Path, per_class=3, val_flat=4) -> Path:
    for s in SYNSETS:
        for i in range(per_class):
            _img(root / "train" / s / f"{s}_{i}.JPEG")
    for i in range(1, val_flat + 1):
        _img(root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    return root


def _val_labels(n=4):
    return {f"ILSVRC2012_val_{i:08d}": SYNSETS[i % 3] for i in range(1, n + 1)}


def test_imagenet_train_class_folders(tmp_path):
    src = open_source("imagenet", _imagenet(tmp_path), "train")
    assert src.classes == SYNSETS
    assert len(src.items) == 9
    assert [it.relpath for it in src.items] == sorted(it.relpath for it in src.items)
    first = src.items[0]
    assert first.key == "train_n01440764_n01440764_0"
    assert first.relpath == "train/n01440764/n01440764_0.JPEG"
    assert first.label == 0 and first.path == tmp_path / first.relpath
    assert {it.label for it in src.items if "n01484850" in it.relpath} == {2}


def test_flat_val_with_plain_label_file_synsets_and_indices(tmp_path):
    root = _imagenet(tmp_path)
    lines = [f"{stem}.JPEG {syn}" for stem, syn in _val_labels().items()]
    (root / "val_labels.txt").write_text("\n".join(lines) + "\n")
    src = open_source("imagenet", root, "val")
    assert src.classes == SYNSETS  # from train, so indices agree across splits
    assert [(it.key, it.label) for it in src.items] == [
        (f"val_{stem}", SYNSETS.index(syn)) for stem, syn in _val_labels().items()]
    # Caffe-style 0-based indices in a file given explicitly.
    other = tmp_path / "val.txt"
    other.write_text("".join(f"{stem}.JPEG {SYNSETS.index(s)}\n" for stem, s in _val_labels().items()))
    by_index = open_source("imagenet", root, "val", label_file=other)
    assert [it.label for it in by_index.items] == [it.label for it in src.items]


def test_flat_val_with_kaggle_csv(tmp_path):
    root = _imagenet(tmp_path)
    rows = [f"{stem},{syn} 1 2 30 40 {syn} 5 6 7 8" for stem, syn in _val_labels().items()]
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    src = open_source("imagenet", root, "val")
    assert [it.label for it in src.items] == [SYNSETS.index(s) for s in _val_labels().values()]


def test_flat_val_without_train_takes_classes_from_labels(tmp_path):
    for i in (1, 2):
        _img(tmp_path / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    (tmp_path / "val_labels.txt").write_text(
        "ILSVRC2012_val_00000001.JPEG n09999999\nILSVRC2012_val_00000002.JPEG n00000001\n")
    src = open_source("imagenet", tmp_path, "val")
    assert src.classes == ["n00000001", "n09999999"]
    assert [it.label for it in src.items] == [1, 0]


def test_val_image_without_label_is_named(tmp_path):
    root = _imagenet(tmp_path)
    labels = list(_val_labels().items())[:-1]
    (root / "val_labels.txt").write_text("".join(f"{s}.JPEG {y}\n" for s, y in labels))
    with pytest.raises(InputError, match="ILSVRC2012_val_00000004.JPEG"):
        open_source("imagenet", root, "val")


def test_label_for_a_missing_file_is_named(tmp_path):
    root = _imagenet(tmp_path)
    text = "".join(f"{s}.JPEG {y}\n" for s, y in _val_labels(5).items())
    (root / "val_labels.txt").write_text(text)
    with pytest.raises(InputError, match="ILSVRC2012_val_00000005"):
        open_source("imagenet", root, "val")


def test_flat_val_without_label_file_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match="label-file"):
        open_source("imagenet", _imagenet(tmp_path), "val")


def test_unknown_synset_in_labels(tmp_path):
    root = _imagenet(tmp_path, val_flat=1)
    (root / "val_labels.txt").write_text("ILSVRC2012_val_00000001.JPEG n12345678\n")
    with pytest.raises(InputError, match="n12345678"):
        open_source("imagenet", root, "val")


def test_imagenet_val_class_folders_use_train_indices(tmp_path):
    root = _imagenet(tmp_path)
    _img(root / "val2" / SYNSETS[2] / "x.JPEG")
    src = open_source("imagenet", root, "val2")
    assert src.classes == SYNSETS and [it.label for it in src.items] == [2]


def test_missing_root_or_split_explains_the_layout(tmp_path):
    with pytest.raises(InputError, match="Expected layout"):
        open_source("imagenet", tmp_path / "nope", "train")
    with pytest.raises(InputError, match="ROOT/train/<synset>"):
        open_source("imagenet", _imagenet(tmp_path), "test")
    with pytest.raises(InputError, match="Expected layout"):
        open_source("imagefolder", tmp_path, "test")


def test_imagefolder_tree(tmp_path):
    for name in ["cat/a.jpg", "cat/B.PNG", "cat/sub/c.webp", "dog/d.TIFF", "dog/e.gif", "dog/f.ppm",
                 "dog/g.bmp", "dog/h.jpeg"]:
        _img(tmp_path / "train" / name)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / "cat" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "train" / "dog" / "broken.jpg").write_bytes(b"")  # listed: the build rejects it
    src = open_source("imagefolder", tmp_path, "train")
    assert src.classes == ["cat", "dog"]
    assert [(it.relpath, it.label) for it in src.items] == [
        ("train/cat/B.PNG", 0), ("train/cat/a.jpg", 0), ("train/cat/sub/c.webp", 0),
        ("train/dog/broken.jpg", 1), ("train/dog/d.TIFF", 1), ("train/dog/e.gif", 1),
        ("train/dog/f.ppm", 1), ("train/dog/g.bmp", 1), ("train/dog/h.jpeg", 1)]
    assert src.items[2].key == "train_cat_sub_c"


def test_imagefolder_root_as_class_tree_and_unlabeled(tmp_path):
    _img(tmp_path / "trees" / "oak" / "1.jpg")
    _img(tmp_path / "trees" / "pine" / "2.jpg")
    src = open_source("imagefolder", tmp_path / "trees", ".")
    assert src.classes == ["oak", "pine"] and [it.key for it in src.items] == ["oak_1", "pine_2"]
    _img(tmp_path / "flat" / "x.png")
    flat = open_source("imagefolder", tmp_path, "flat")
    assert flat.classes == [] and [(it.key, it.label) for it in flat.items] == [("flat_x", -1)]


def test_limit_spreads_across_classes_and_nests(tmp_path):
    root = _imagenet(tmp_path, per_class=4)
    full = open_source("imagenet", root, "train")
    two = open_source("imagenet", root, "train", limit=2)
    five = open_source("imagenet", root, "train", limit=5)
    assert [it.label for it in two.items] == [0, 1]
    assert sorted(it.label for it in five.items) == [0, 0, 1, 1, 2]
    assert set(two.items) <= set(five.items) <= set(full.items)
    assert five.items == open_source("imagenet", root, "train", limit=5).items
    assert open_source("imagenet", root, "train", limit=1000).items == full.items
    with pytest.raises(ConfigError):
        open_source("imagenet", root, "train", limit=0)


def test_keys_unique_dot_free_and_tar_safe(tmp_path):
    for name in ["a b/x.y.z.jpg", "a b/é.png", "c.d/e.JPG", "c.d/e-f_g.jpeg"]:
        _img(tmp_path / "s" / name)
    src = open_source("imagefolder", tmp_path, "s")
    keys = [it.key for it in src.items]
    assert len(set(keys)) == len(keys)
    for k in keys:
        assert "." not in k and "/" not in k and k.replace("_", "").replace("-", "").isalnum()
    assert make_key("s/c.d/e.JPG") == "s_c_d_e"


def test_key_collision_is_an_error_naming_both(tmp_path):
    _img(tmp_path / "s" / "k" / "x.jpg")
    _img(tmp_path / "s" / "k" / "x.png")
    with pytest.raises(InputError, match=r"x\.jpg.*x\.png"):
        open_source("imagefolder", tmp_path, "s")


def test_unknown_dataset_lists_the_registry(tmp_path):
    with pytest.raises(ConfigError, match="imagefolder, imagenet"):
        open_source("cityscapes-typo", tmp_path, "train")
    assert set(OPENERS) >= {"imagenet", "imagefolder"}


@pytest.mark.parametrize("split,n", [("train", 4), ("val", 2)])
def test_bundled_demo_opens(split, n):
    src = open_source("imagenet", DEMO, split)
    assert len(src.items) == n and len(src.classes) == 4
    assert all(it.label >= 0 and "." not in it.key and it.path.is_file() for it in src.items)


def _two_class_tree(root, names=("n01", "n02"), same_file_name=False):
    from PIL import Image

    for i, name in enumerate(names):
        (root / "train" / name).mkdir(parents=True)
        file = "img.png" if same_file_name else f"img{i}.png"
        Image.new("RGB", (8, 8), (i * 80, 0, 0)).save(root / "train" / name / file)
    return root


def test_a_symlink_loop_lists_each_image_once_under_its_own_class(tmp_path):
    import os
    import warnings as w

    from latentstore.build.sources import open_source

    root = _two_class_tree(tmp_path / "data")
    os.symlink("..", root / "train" / "n01" / "up")          # a loop back to the split folder
    os.symlink("../n02", root / "train" / "n01" / "alias")   # another class's folder
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        source = open_source("imagefolder", root, "train")
    assert [(it.relpath, it.label) for it in source.items] == [("train/n01/img0.png", 0), ("train/n02/img1.png", 1)]
    text = "\n".join(str(c.message) for c in caught)
    assert "train/n01/up links to" in text and "train/n01/alias links to" in text


def test_a_linked_duplicate_file_is_listed_once(tmp_path):
    import os
    import warnings as w

    from latentstore.build.sources import open_source

    root = _two_class_tree(tmp_path / "data")
    os.symlink("img0.png", root / "train" / "n01" / "same.png")
    with w.catch_warnings(record=True) as caught:
        w.simplefilter("always")
        items = open_source("imagefolder", root, "train").items
    assert len(items) == 2 and any("is a link to an image already listed" in str(c.message) for c in caught)


def test_class_names_in_any_script_are_kept(tmp_path):
    from latentstore.build.sources import open_source

    root = _two_class_tree(tmp_path / "data", names=("猫", "狗"), same_file_name=True)
    source = open_source("imagefolder", root, "train")
    assert source.classes == sorted(["猫", "狗"])
    keys = [it.key for it in source.items]
    assert len(set(keys)) == 2 and all(k.isascii() and "." not in k for k in keys)
    assert {it.relpath.split("/")[1]: source.classes[it.label] for it in source.items} == {"猫": "猫", "狗": "狗"}
