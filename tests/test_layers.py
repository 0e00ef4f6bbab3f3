"""Each stage of the package imports only the stages below it (README, "Layout").

The walk reads every module's import statements (module level and inside functions) with `ast`,
so it sees what the code asks for, not what happened to be loaded. Reader-side modules may reach
the codec side only from inside a function (the `decode+` baselines, a trainer's `--teacher`
check); at module level they never do, which tests/test_reader_imports.py also proves at run time.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "latentstore"

#: (stage, side, modules) from the bottom up; a module may import its own stage and the ones below.
#: The reader side and the codec side share a stage but not their module-level imports.
STAGES = [
    (0, "base", {"errors", "checksum", "threads", "strings_container", "profile", "ranks", "format", "sample",
                 "numerics", "location", "model_names", "coder_names", "paths", "locks", "schema"}),
    (1, "base", {"augment", "images", "datasets", "weights", "metrics", "report", "models", "models.adapt",
                 "models.baselines", "models.pspnet", "models.taps", "teacher", "teacher.dtypes",
                 "teacher.fingerprint", "teacher.info", "teacher.decode"}),
    (2, "base", {"writers", "writers.webdataset", "writers.zarr", "readers", "readers.webdataset",
                 "readers.zarr", "commit", "seal", "lookup"}),
    (3, "reader", {"dataset", "info", "compat", "checkpoint_view", "train", "train.checkpoint", "train.config",
                   "train.ddp", "train.log", "train.loop", "train.model", "train.speed", "train.stop", "train.student",
                   "train.validate",
                   "train.transfer", "evaluate", "evaluate.batches", "evaluate.options", "evaluate.rate",
                   "evaluate.record", "evaluate.run", "copy"}),
    (3, "codec", {"coders", "custom_coder", "encode", "generic_encode", "teacher.load", "device_teacher",
                  "complexity", "build_config", "prepare",
                  "crops_to_samples", "resume", "parallel"}),
    (4, "codec", {"build", "convert", "add_teacher", "verify", "dryrun"}),
    (5, "cli", {"cli", ""}),  # "" is the package itself (latentstore/__init__.py: open_store)
]
PLACE = {module: (stage, side) for stage, side, modules in STAGES for module in modules}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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
            while target and target not in PLACE:  # "from .format import X" names a module; X may not
                target = target.rpartition(".")[0]
            found.append((target, id(node) in top))
    return found


def test_every_module_has_a_stage():
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    assert modules - set(PLACE) == set(), "add these modules to STAGES"
    assert set(PLACE) - modules == set(), "these modules in STAGES no longer exist"


def test_each_stage_imports_only_its_own_and_lower_stages():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = module_name(path)
        stage, side = PLACE[me]
        for target, top_level in imports(path):
            if target == me or target == "" and me != "":
                continue
            their_stage, their_side = PLACE[target]
            if their_stage > stage:
                wrong.append(f"{me} (stage {stage}) imports {target} (stage {their_stage})")
            elif side == "reader" and their_side == "codec" and top_level:
                wrong.append(f"{me} (reader side) imports {target} (codec side) at module level")
    assert not wrong, "\n".join(wrong)


def test_the_walk_sees_imports_inside_functions():
    found = imports(PACKAGE / "cli.py")
    assert ("build", False) in found and all(not top for target, top in found if target == "build")
