"""One store summary for checkpoints: what a resume and an evaluation compare, old checkpoints included."""
import pytest

from latentstore.train.store_identity import check_compatible, saved_summary, store_summary
from latentstore.errors import StoreError
from latentstore.train.checkpoint import check_same_store

MANIFEST = {"backend": "webdataset", "coder": {"name": "cheng2020-anchor", "quality": 3, "latent_kind": "context",
                                              "channels": 128, "weights": {"sha256": "a" * 64}},
            "splits": {"train": {"latent_shape": [128, 16, 16], "variants": 2, "samples": 8,
                                 "classes": ["cat", "dog"], "teacher": {"name": "resnet50", "weights_sha256": "t"}}}}


def old_style(summary: dict) -> dict:
    """The summary as checkpoints of earlier latentstore versions saved it."""
    old = {k: v for k, v in summary.items() if k not in ("weights_sha256", "num_classes", "classes", "latent_kind",
                                                          "channels")}
    return {**old, "coder_sha256": summary["weights_sha256"], "classes": summary["num_classes"]}


def test_an_old_checkpoint_resumes_on_its_store_and_is_refused_on_another():
    current = store_summary(MANIFEST, "train")
    check_same_store(old_style(current), current, "last.pt")
    other = {**current, "weights_sha256": "b" * 64}
    with pytest.raises(StoreError, match="weights_sha256: checkpoint 'aaaa"):
        check_same_store(old_style(current), other, "last.pt")


def test_an_old_checkpoint_is_evaluated_against_its_weights_and_class_count():
    trained_on = saved_summary(old_style(store_summary(MANIFEST, "train")))
    assert trained_on["weights_sha256"] == "a" * 64 and trained_on["num_classes"] == 2 and "classes" not in trained_on
    check_compatible(trained_on, store_summary(MANIFEST, "train"), "classification")
    fewer = {**MANIFEST, "splits": {"train": {**MANIFEST["splits"]["train"], "classes": ["cat"]}}}
    with pytest.raises(StoreError, match="num_classes: checkpoint 2, store 1"):
        check_compatible(trained_on, store_summary(fewer, "train"), "classification")
