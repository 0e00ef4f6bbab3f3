"""pyproject.toml declares what latentstore imports, and imports what it declares (issue 25, item 6)."""
import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: import name -> distribution name, where they differ
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "google_crc32c": "google-crc32c"}


def requirement_names(requirements: list) -> set:
    return {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def imported_distributions() -> dict:
    """distribution -> modules of latentstore/ that import it (module level or inside a function)."""
    found: dict = {}
    for path in (ROOT / "latentstore").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "latentstore" or top in sys.stdlib_module_names:
                    continue
                dist = DISTRIBUTION.get(top, top).lower().replace("_", "-")
                found.setdefault(dist, set()).add(str(path.relative_to(ROOT)))
                if name == "torch.utils.tensorboard":
                    found.setdefault("tensorboard", set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_import_is_declared_and_every_base_dependency_imported():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = requirement_names(project["dependencies"])
    extras = {name: requirement_names(reqs) for name, reqs in project["optional-dependencies"].items()}
    imported = imported_distributions()
    undeclared = {d: sorted(m) for d, m in imported.items()
                  if d not in base and not any(d in e for e in extras.values())}
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    unused = base - set(imported)
    assert not unused, f"declared as base dependencies but never imported by latentstore/: {sorted(unused)}"


def test_the_codec_is_an_extra_not_a_base_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "compressai" not in requirement_names(project["dependencies"])
    assert "compressai" in requirement_names(project["optional-dependencies"]["encode"])
