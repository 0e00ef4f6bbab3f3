"""Top-1/top-5 and the real bpp of a classification checkpoint on a stored val split.

    python eval/classify.py --store /stores/in1k-val-cheng2020-q3 --checkpoint runs/r50aa-q3/best.pt
    torchrun --nproc_per_node 4 eval/classify.py --store ... --checkpoint ...   # same numbers, faster

Writes eval.json (next to the checkpoint, or --out) and eval.md (a row in the
paper's table layout); see docs/results.md. The logic is latentstore.evaluate (run.py).
"""
import sys

from latentstore.evaluate.run import main as evaluate


def main(argv=None) -> int:
    return evaluate(argv, "classification")


if __name__ == "__main__":
    sys.exit(main())
