"""Which teacher a store's features come from, and refusing a store whose teacher is another one.

A trainer that distils from teacher features must get the features of the teacher it expects
(docs/reliability.md §7): the manifest's fingerprint (model name, weights sha256, normalization,
taps) is compared component by component, and every difference is named.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

# What the manifest fingerprint must agree on for a trainer to accept a store.
FINGERPRINT_KEYS = {"model": ("name",), "weights": ("weights_sha256",), "normalization": ("mean", "std"),
                    "taps": ("taps",)}


def teacher_entries(manifest: dict, split: str | None = None) -> dict:
    """{split: teacher fingerprint} for the splits (or the one split) that store teacher features."""
    splits = manifest["splits"] if split is None else {split: manifest["splits"][split]}
    return {s: e["teacher"] for s, e in splits.items() if e.get("teacher")}


def expected_fingerprint(teacher) -> dict:
    """The fingerprint components of a loaded teacher (``latentstore.teacher.load.Teacher``)."""
    return {"name": teacher.name, "weights_sha256": teacher.weights["sha256"],
            "mean": list(teacher.mean), "std": list(teacher.std),
            "taps": [{"field": t.field, "layer": t.layer, "stride": t.stride, "channels": t.channels}
                     for t in teacher.taps]}


def check_teacher(manifest: dict, expected, split: str | None = None) -> None:
    """Refuse a store whose teacher is not the one a trainer distils from.

    `expected` is a fingerprint dict (``Teacher.fingerprint``) or a loaded Teacher.
    Compares model name, weights sha256, normalization (mean/std) and taps
    (strides or layers, in order); raises ConfigError naming every difference.
    """
    if not isinstance(expected, dict):
        expected = expected_fingerprint(expected)
    entries = teacher_entries(manifest, split)
    if not entries:
        raise ConfigError(f"The store has no teacher features{f' in split {split!r}' if split else ''}: "
                          f"build it with --teacher, or run `latentstore add-teacher`")
    for s, stored in entries.items():
        diffs = []
        for component, keys in FINGERPRINT_KEYS.items():
            for k in keys:
                have, want = stored.get(k), expected.get(k)
                if k in ("mean", "std") and have is not None and want is not None:
                    same = np.allclose(have, want, rtol=0, atol=1e-7)
                else:
                    same = have == want
                if not same:
                    diffs.append(f"{component} ({k}): store has {have!r}, expected {want!r}")
        if diffs:
            raise ConfigError(f"Split {s!r} holds features of another teacher:\n  " + "\n  ".join(diffs)
                              + "\nRebuild the teacher features (`latentstore add-teacher`) or distil from the "
                                "stored teacher.")
