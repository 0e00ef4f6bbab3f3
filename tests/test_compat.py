"""One store summary for checkpoints: what a resume and an evaluation compare."""
import pytest

from latentstore.errors import StoreError
from latentstore.train.checkpoint import check_same_store
from latentstore.train.store_identity import check_compatible, store_summary

MANIFEST = {"backend": "webdataset", "coder": {"name": "cheng2020-anchor", "quality": 3, "latent_kind": "context",
                                              "channels": 128, "weights": {"sha256": "a" * 64}},
            "splits": {"train": {"latent_shape": [128, 16, 16], "variants": 2, "samples": 8,
                                 "classes": ["cat", "dog"], "teacher": {"name": "resnet50", "weights_sha256": "t"}}}}


def test_a_checkpoint_resumes_on_its_store_and_is_refused_on_another():
    current = store_summary(MANIFEST, "train")
    check_same_store(dict(current), current, "last.pt")
    other = {**current, "weights_sha256": "b" * 64}
    with pytest.raises(StoreError, match="weights_sha256: checkpoint 'aaaa"):
        check_same_store(current, other, "last.pt")


def test_a_checkpoint_is_evaluated_against_its_weights_and_classes():
    trained_on = store_summary(MANIFEST, "train")
    check_compatible(trained_on, store_summary(MANIFEST, "train"), "classification")
    fewer = {**MANIFEST, "splits": {"train": {**MANIFEST["splits"]["train"], "classes": ["cat"]}}}
    with pytest.raises(StoreError, match="num_classes: checkpoint 2, store 1"):
        check_compatible(trained_on, store_summary(fewer, "train"), "classification")
    other = {**MANIFEST, "coder": {**MANIFEST["coder"], "weights": {"sha256": "b" * 64}}}
    with pytest.raises(StoreError, match="weights_sha256"):
        check_compatible(trained_on, store_summary(other, "train"), "classification")
