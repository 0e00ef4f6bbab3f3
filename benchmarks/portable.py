"""Import before torch: pins the portable numerics (latentstore/store/numerics.py) in this process, as the
`latentstore` command line does when it restarts itself, so the benchmarks' builds run as a user's do."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from latentstore.store.numerics import PORTABLE_ENV  # noqa: E402  (light: imports no torch)

if "torch" in sys.modules:
    raise RuntimeError("import portable before torch: the pins must be set before torch loads")
os.environ.update(PORTABLE_ENV)
