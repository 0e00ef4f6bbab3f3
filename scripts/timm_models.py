"""Write latentstore/data/timm_models.txt: the model names of the installed timm, so that `latentstore build
--teacher NAME` refuses a misspelt name at once instead of after importing timm (seconds). Rerun it after
changing the timm pin in pyproject.toml; tests/test_startup.py checks the table against the installed timm.

    .venv/bin/python scripts/timm_models.py
"""
from pathlib import Path

import timm

TABLE = Path(__file__).resolve().parents[1] / "latentstore" / "data" / "timm_models.txt"

names = timm.list_models()
TABLE.write_text(f"# timm {timm.__version__}: timm.list_models(), written by scripts/timm_models.py\n"
                 + "\n".join(names) + "\n")
print(f"{TABLE}: {len(names)} names of timm {timm.__version__}")
