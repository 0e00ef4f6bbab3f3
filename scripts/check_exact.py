"""Build stores of any photo folder with every coder whose ŷ holds μ, and judge them by CompressAI alone.

    .venv/bin/python scripts/check_exact.py --root PHOTOS --out /tmp/exact   # PHOTOS/train/<class>/*

Each coder gets a seeded checkpoint file (non-trivial symbols); each store is built through the CLI
(224 crops padded to 256, 2 variants) at --batch-size 32 / --encoders 1 / float32 and at
--batch-size 1 / --encoders 2 / float16, then every sample is replayed and checked with the
reference of tests/test_exact.py, which shares no code with the build.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_exact import MU_CODERS, assert_exact_against_compressai, cli, zoo_model  # noqa: E402

from latentstore.coders.registry import get_spec, untrained_coder  # noqa: E402

CONFIGS = [("32", "1", "float32"), ("1", "2", "float16")]  # --batch-size, --encoders, --y-hat-dtype


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="an ImageFolder tree with a train/ split")
    parser.add_argument("--out", type=Path, required=True, help="folder for the checkpoints and stores")
    parser.add_argument("--coders", default=",".join(MU_CODERS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for coder in args.coders.split(","):
        ckpt = args.out / f"{coder}.pth.tar"
        torch.save(untrained_coder(get_spec(coder), 3, seed=11).state_dict(), ckpt)
        model = zoo_model(coder, 3, ckpt)
        for batch, encoders, dtype in CONFIGS:
            store = args.out / f"{coder}-b{batch}-e{encoders}-{dtype}"
            started = time.time()
            cli("build", "--coder", coder, "--quality", 3, "--weights", ckpt, "--dataset", "imagefolder",
                "--root", args.root, "--split", "train", "--variants", 2, "--shard-size", 3, "--batch-size", batch,
                "--encoders", encoders, "--y-hat-dtype", dtype, "--out", store, "--quiet")
            n = assert_exact_against_compressai(store, "train", model, args.root, dtype=np.dtype(dtype).type)
            print(f"{coder:18s} batch {batch:>2} encoders {encoders} {dtype}: {n} of {n} samples exact "
                  f"(strings == compress(), y_hat == decompress()'s g_s input)  [{time.time() - started:.0f} s]",
                  flush=True)


if __name__ == "__main__":
    main()
