"""The real rate of what was evaluated: bits of the stored bitstrings per unpadded pixel."""
from __future__ import annotations

import math

import torch

from ..errors import StoreError
from ..store.strings_container import coded_bits
from .metrics import all_reduce_sum


class BitCounter:
    """Exact rate: int64 [bits, unpadded pixels, samples], each sample checked against its meta.json."""

    def __init__(self, container: bool = False):
        self.counts = torch.zeros(3, dtype=torch.int64)
        self.container = container  # the strings container of the generic path (store/strings_container.py)

    def update(self, batch: dict) -> None:
        z_strings = batch.get("z_string") or [b""] * len(batch["y_string"])
        for key, shard, meta, y, z in zip(batch["__key__"], batch["__shard__"], batch["meta"],
                                          batch["y_string"], z_strings):
            bits = coded_bits(y, z, self.container)
            if bits != meta["bits"]:
                raise StoreError(f"shard {shard}, key {key}: bitstrings hold {bits} bits, meta.json records "
                                 f"{meta['bits']}; run `latentstore verify`")
            h, w = meta["image_size"]
            self.counts += torch.tensor([bits, h * w, 1])

    def all_reduce(self) -> "BitCounter":
        all_reduce_sum(self.counts)
        return self

    def summary(self) -> dict:
        bits, pixels, samples = (int(v) for v in self.counts)
        return {"bpp": bits / pixels if pixels else None, "bits": bits, "pixels": pixels, "samples": samples}


def check_rate(rate: dict, manifest: dict, split: str, variant: int) -> dict:
    """Every sample of the variant was read once; with one variant, bpp equals the manifest's mean_bpp."""
    info = manifest["splits"][split]
    expected = sum(s["samples"] for s in info["shards"] if s["variant"] == variant)
    if rate["samples"] != expected:
        raise StoreError(f"read {rate['samples']} samples of variant {variant}, the manifest records {expected}")
    check = {"manifest_mean_bpp": info.get("mean_bpp"), "matches_manifest": None}
    if info["variants"] == 1 and info.get("mean_bpp") is not None and rate["bpp"] is not None:
        check["matches_manifest"] = math.isclose(rate["bpp"], info["mean_bpp"], rel_tol=1e-12)
        if not check["matches_manifest"]:
            raise StoreError(f"bpp from the stored bitstrings is {rate['bpp']!r}, the manifest says "
                             f"{info['mean_bpp']!r}: the store disagrees with itself; run `latentstore verify`")
    return check
