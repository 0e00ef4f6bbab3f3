"""What a trained model depends on in a store, recorded once per checkpoint and compared before use.

``store_summary`` is the one summary of a store split: the trainers save it in every checkpoint,
a resumed run must find all of it again (``latentstore.train.checkpoint.check_same_store``), and
evaluation compares the parts a model's numbers depend on (``check_compatible``).
"""
from __future__ import annotations

from ..errors import StoreError


def store_summary(manifest: dict, split: str) -> dict:
    """Coder, weights, geometry, sample counts, classes and teacher of one split of a store."""
    info = manifest["splits"][split]
    coder = manifest["coder"]
    teacher = info.get("teacher") or {}
    classes = list(info.get("classes") or [])
    return {"backend": manifest.get("backend", "webdataset"), "split": split,
            "coder": coder["name"], "quality": coder["quality"], "latent_kind": coder.get("latent_kind"),
            "channels": coder.get("channels"), "weights_sha256": coder.get("weights", {}).get("sha256"),
            "latent_shape": list(info["latent_shape"]), "variants": info["variants"], "samples": info["samples"],
            "num_classes": len(classes), "classes": classes,
            "teacher": teacher.get("name"), "teacher_sha256": teacher.get("weights_sha256")}


#: What evaluation compares: the facts a model's outputs depend on (not split, counts or teacher).
COMPARED = ("coder", "quality", "latent_kind", "channels", "weights_sha256", "latent_shape", "num_classes",
            "classes")


def check_compatible(trained_on: dict, store: dict, task: str) -> None:
    """Refuse evaluation when the checkpoint's training store and this store disagree; name each field.

    ``trained_on`` and ``store`` are ``store_summary`` dicts. Segmentation
    models are fully convolutional and evaluate on whole images, so for them
    only the channel count of ``latent_shape`` must agree (train crops are
    C×40×40, val images C×64×128); classification compares the whole shape.
    Fields the checkpoint does not record are not compared.
    """
    diffs = []
    for name in COMPARED:
        want, got = trained_on.get(name), store.get(name)
        if want is None or got is None:
            continue
        if name == "latent_shape":
            want, got = list(want), list(got)
            if task == "segmentation":
                want, got, name = want[:1], got[:1], "latent_shape[0] (channels)"
        if name == "classes" and want != got:
            extra = f" ({len(want)} vs {len(got)} classes)" if len(want) != len(got) else " (other names/order)"
            diffs.append(f"classes: the checkpoint was trained on other classes than the store labels{extra}")
        elif want != got:
            diffs.append(f"{name}: checkpoint {_short(want)}, store {_short(got)}")
    if diffs:
        raise StoreError("The checkpoint does not match the store it would be evaluated on:\n  "
                         + "\n  ".join(diffs) + "\nEvaluate on a store built with the training store's coder, "
                         "quality and weights (see `latentstore info`), or use a matching checkpoint.")


def _short(value):
    return value[:12] + "…" if isinstance(value, str) and len(value) > 16 else value
