"""The user-facing docs run as written: README's reading snippet, FORMAT.md's tree and WebDataset line."""
import re
import warnings
from pathlib import Path

import pytest

from conftest import tiny_store


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def padded_store(tiny_folder, tmp_path_factory):
    """32-pixel crops padded to 64: ŷ is 4×4 of which rows/cols 1..2 see the image."""
    out = tmp_path_factory.mktemp("docs-store")
    tiny_store(tiny_folder, out, crop=32, shard_size=2)
    return out


def test_readme_reading_snippet_crops_to_the_valid_region(padded_store):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Read a store\n```python\n(.*?)```", text, re.S)[1]
    code = (block.replace('"/stores/in1k-cheng2020-q3"', repr(str(padded_store)))
            .replace("range(16)", "range(1)").replace("num_workers=8", "num_workers=0"))
    ns: dict = {}
    exec(code, ns)
    assert ns["ds"].info["valid_region"] == [1, 3, 1, 3]
    assert tuple(ns["y_hat"].shape[-2:]) == (2, 2)          # the padding is cut away, as the trainers do


def test_format_tree_names_everything_a_store_holds(padded_store):
    text = (ROOT / "docs" / "FORMAT.md").read_text()
    tree = re.search(r"```\nSTORE/\n(.*?)```", text, re.S)[1]
    for path in padded_store.iterdir():
        name = path.name.replace("train", "<split>") + ("" if path.is_file() else "/")
        assert re.search(rf"^\s+{re.escape(name)}", tree, re.M), name
    part = next((padded_store / "parts").iterdir()).name
    assert part == "train-part-0000-of-0001.json" and "<split>-part-0000-of-0001.json" in tree


def test_format_webdataset_line_reads_every_sample_without_warnings(padded_store):
    import webdataset as wds

    text = " ".join((ROOT / "docs" / "FORMAT.md").read_text().split())
    expr = re.search(r"or with WebDataset: `(wds\.WebDataset\(.*?\)\.decode\(\))`", text)[1]
    expr = expr.replace("v000-{{000000..000009}}", "v000-{{000000..000002}}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        samples = list(eval(expr, {"wds": wds, "store": str(padded_store)}))
    assert len(samples) == 6 and all("y_hat.npy" in s for s in samples)


def test_every_module_path_the_docs_cite_exists():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    cited = {(doc.name, m[0]) for doc in docs for m in re.finditer(r"latentstore/[\w/]+(?:\.py|/)", doc.read_text())}
    assert cited and not [(doc, path) for doc, path in cited if not (ROOT / path).exists()]


def test_the_pipeline_page_places_every_package():
    text = (ROOT / "docs" / "pipeline.md").read_text()
    packages = {p.parent.name for p in (ROOT / "latentstore").glob("*/__init__.py")}
    assert packages and {p for p in packages if f"latentstore/{p}/" not in text and f"`{p}/`" not in text} == set()
