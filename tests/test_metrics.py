"""Metrics on cases small enough to check by hand, and their exact reduction over two gloo processes."""
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from latentstore.errors import StoreError
from latentstore.evaluate.metrics import ConfusionMatrix, TopK, topk_correct

# 4 samples, 3 classes. Ranking per row (best first): [2,1,0], [0,2,1], [1,0,2], [2,0,1]
LOGITS = torch.tensor([[0.1, 0.5, 0.9],
                       [0.8, 0.1, 0.3],
                       [0.4, 0.7, 0.2],
                       [0.3, 0.2, 0.6]])
TARGET = torch.tensor([2, 2, 1, 1])
# top-1 hits: sample 0 (2) and 2 (1) -> 2 of 4. top-2 adds sample 1 (2 is second) -> 3 of 4.
# sample 3's class 1 is last: a hit only at k=3.


def test_topk_counts_by_hand():
    assert topk_correct(LOGITS, TARGET, ks=(1, 2, 3)).tolist() == [2, 3, 4]


def test_topk_accumulates_integers_and_reports_percent():
    acc = TopK((1, 2))
    acc.update(LOGITS[:3], TARGET[:3])   # batches of any size give the same counts
    acc.update(LOGITS[3:], TARGET[3:])
    assert acc.counts.dtype == torch.int64
    assert acc.compute() == {"top1": 50.0, "top2": 75.0, "samples": 4}


def test_top5_with_fewer_classes_counts_every_sample():
    assert topk_correct(LOGITS, TARGET, ks=(1, 5)).tolist() == [2, 4]


def test_topk_refuses_labels_outside_the_model_classes():
    with pytest.raises(StoreError, match="outside 0..2"):
        topk_correct(LOGITS, torch.tensor([0, 1, 2, 3]))


# Labels and predictions of 6 pixels in a 2x3 map; 255 is ignored.
LABEL = torch.tensor([[0, 0, 1], [1, 2, 255]])
PRED = torch.tensor([[0, 1, 1], [1, 0, 2]])
# cm[t, p]: t=0 -> p 0 once, p 1 once; t=1 -> p 1 twice; t=2 -> p 0 once; the 255 pixel is skipped.
CM = [[1, 1, 0],
      [0, 2, 0],
      [1, 0, 0]]
# IoU_c = cm[c,c] / (row c + col c - cm[c,c]):
#   class 0: 1 / (2 + 2 - 1) = 1/3;  class 1: 2 / (2 + 3 - 2) = 2/3;  class 2: 0 / (1 + 0 - 0) = 0
IOU = [1 / 3, 2 / 3, 0.0]


def test_confusion_matrix_and_iou_by_hand():
    cm = ConfusionMatrix(3)
    cm.update(PRED, LABEL)
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == CM
    np.testing.assert_allclose(cm.iou(), IOU)
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.pixels == 5
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)


def test_a_class_absent_from_labels_and_predictions_is_left_out_of_the_mean():
    cm = ConfusionMatrix(4)
    cm.update(PRED, LABEL)
    assert math.isnan(cm.iou()[3])
    assert cm.miou() == pytest.approx(1 / 3)  # the mean of the 3 present classes, not divided by 4


def test_counts_are_exact_beyond_float32_precision():
    """2^24 + 1 pixels of one class: a float32 accumulator would lose the +1; int64 does not."""
    cm = ConfusionMatrix(2)
    big = torch.zeros(2 ** 24 + 1, dtype=torch.uint8)
    cm.update(big, big)
    cm.update(big[:3], big[:3])
    assert int(cm.matrix[0, 0]) == 2 ** 24 + 4


def test_labels_that_are_not_train_ids_are_an_error():
    cm = ConfusionMatrix(19)
    with pytest.raises(StoreError, match="train ids"):
        cm.update(torch.zeros(2, dtype=torch.long), torch.tensor([3, 33]))  # 33: a raw labelId


def test_prediction_and_label_shapes_must_agree():
    with pytest.raises(ValueError, match="upsample"):
        ConfusionMatrix(3).update(PRED[:, :2], LABEL)


def _random_maps(seed: int, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 19, (n, 17, 23), generator=g)
    label[torch.rand(label.shape, generator=g) < 0.1] = 255
    pred = torch.randint(0, 19, (n, 17, 23), generator=g)
    logits = torch.randn(n, 19, generator=g)
    return pred, label, logits, label[:, 0, 0].clamp(max=18)


def _reduce_worker(rank, world, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        pred, label, logits, target = _random_maps(0)
        mine = slice(rank * 4, None) if rank else slice(0, 4)  # uneven shares: 4 and 2 maps
        cm, acc = ConfusionMatrix(19), TopK((1, 5))
        cm.update(pred[mine], label[mine])
        acc.update(logits[mine], target[mine])
        cm.all_reduce()
        acc.all_reduce()
        torch.save({"cm": cm.matrix, "acc": acc.counts}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned interpreters importing torch: ~15 s on a loaded 2-core box
def test_two_process_gloo_reduction_equals_single_process(tmp_path):
    pred, label, logits, target = _random_maps(0)
    single, acc = ConfusionMatrix(19), TopK((1, 5))
    single.update(pred, label)
    acc.update(logits, target)
    mp.spawn(_reduce_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(got["cm"], single.matrix), f"rank {rank}"
        assert torch.equal(got["acc"], acc.counts), f"rank {rank}"
    assert int(single.matrix.sum()) == int((label != 255).sum())
