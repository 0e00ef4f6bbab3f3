"""mIoU (19 Cityscapes classes, ignore 255), per-class IoU and the real bpp of a segmentation checkpoint.

    python eval/segment.py --store /stores/cs-val-cheng2020-q3 --checkpoint runs/psp-q3/best.pt
    torchrun --nproc_per_node 4 eval/segment.py --store ... --checkpoint ...   # confusion matrices summed

Full-resolution val latents; predictions are upsampled to the label maps'
resolution; the confusion matrix is int64. Writes eval.json and eval.md
(docs/results.md). The logic is latentstore.evaluate (run.py).
"""
import sys

from latentstore.evaluate.run import main as evaluate


def main(argv=None) -> int:
    return evaluate(argv, "segmentation")


if __name__ == "__main__":
    sys.exit(main())
