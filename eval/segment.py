"""mIoU (19 Cityscapes classes, ignore 255), per-class IoU and the real bpp of a segmentation checkpoint.

    python eval/segment.py --store /stores/cs-val-cheng2020-q3 --checkpoint runs/psp-q3/best.pt
    torchrun --nproc_per_node 4 eval/segment.py --store ... --checkpoint ...   # confusion matrices summed

Full-resolution val latents; predictions are upsampled to the label maps'
resolution; the confusion matrix is int64. Writes eval.json and eval.md
(docs/results.md). The logic is latentstore.evaluate.
"""
import sys
import warnings

warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

from latentstore.errors import LatentstoreError  # noqa: E402
from latentstore.evaluate import parse_args, run  # noqa: E402


def main(argv=None) -> int:
    cfg = parse_args(argv, "segmentation")
    try:
        run(cfg, "segmentation")
    except LatentstoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
