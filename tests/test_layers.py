"""The packages are the pipeline's stages, and each imports only what lies below it (README, "Layout").

The walk reads every module's import statements (module level and inside functions) with `ast`,
so it sees what the code asks for, not what happened to be loaded. Two rules carry the layering:
`store/` imports nothing of ours but `errors`, and `read/`, `train/` and `evaluate/` never import
`build/`. The reader side reaches the codec (`coders/`) only from inside a function, for the
`decode+` baselines; tests/test_reader_imports.py proves at run time that it never needs it.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "latentstore"

#: top-level unit -> (units it may import at module level, units it may import only inside a function)
ALLOWED = {
    "errors": (set(), set()),
    "flags": ({"errors"}, set()),  # config dataclass -> flags, for every command
    "store": ({"errors"}, set()),
    "weights": ({"errors", "store"}, set()),
    "coders": ({"errors", "store", "weights"}, set()),
    "models": ({"errors"}, {"coders"}),
    "teacher": ({"errors", "store", "weights"}, {"models"}),
    "build": ({"errors", "flags", "store", "weights", "coders", "teacher", "models"}, set()),
    "read": ({"errors", "store", "teacher"}, set()),
    "train": ({"errors", "flags", "store", "read", "models", "teacher", "evaluate"}, {"coders"}),
    "evaluate": ({"errors", "flags", "store", "read", "models", "train"}, {"coders"}),
    "commands": ({"errors", "flags", "store", "weights", "coders", "models", "teacher", "build", "read", "train",
                  "evaluate"}, set()),
    "": (set(), {"read"}),  # the package itself: open_store on first use
    "__main__": ({"commands"}, set()),  # python -m latentstore
}
NEVER_BUILD = ("read", "train", "evaluate")


def unit(module: str) -> str:
    return module.split(".")[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p) for p in PACKAGE.rglob("*.py")}


def imports(path: Path) -> list[tuple[str, bool]]:
    """(latentstore module imported, at module level?) for every import statement of one file."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1] if node.level > 1 else package
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] if node.module else [".".join(base + [a.name]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("latentstore"):
            names = [node.module.removeprefix("latentstore").lstrip(".")]
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("latentstore").lstrip(".") for a in node.names
                     if a.name.split(".")[0] == "latentstore"]
        else:
            continue
        for target in names:
            while target and target not in MODULES:  # "from .format import X" names a module; X may not
                target = target.rpartition(".")[0]
            found.append((target, id(node) in top))
    return found


def test_every_module_lies_in_a_known_unit():
    assert {unit(m) for m in MODULES} - set(ALLOWED) == set(), "add these units to ALLOWED"


def test_each_unit_imports_only_what_lies_below_it():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        mine = unit(me)
        top_allowed, inner_allowed = ALLOWED[mine]
        for target, top_level in imports(path):
            theirs = unit(target)
            if theirs == mine or target == "" and me != "":
                continue
            if theirs in top_allowed or not top_level and theirs in inner_allowed:
                continue
            where = "at module level" if top_level else "inside a function"
            wrong.append(f"{me} imports {target} {where}")
    assert not wrong, "\n".join(wrong)


def test_no_reader_side_module_imports_the_build():
    for unit_name in NEVER_BUILD:
        assert "build" not in ALLOWED[unit_name][0] | ALLOWED[unit_name][1]


def test_the_walk_sees_imports_inside_functions():
    found = imports(PACKAGE / "commands" / "cli.py")
    assert ("build.run", False) in found and all(not top for target, top in found if unit(target) == "build")
