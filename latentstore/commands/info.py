"""What `latentstore info` reports: a machine summary of a manifest, and its human rendering."""
from __future__ import annotations

from ..store.format import ENCODER_REVISION, field_for_member, read_manifest
from ..store.location import is_url, shown
from ..store.remote import local_root
from ..teacher.info import render_teacher, summarize_teacher


def summarize(store) -> dict:
    m = read_manifest(store)
    coder, weights = m["coder"], m["coder"]["weights"]
    splits = {}
    for name, s in sorted(m["splits"].items()):
        per_variant = {}
        for shard in s["shards"]:
            per_variant[shard["variant"]] = per_variant.get(shard["variant"], 0) + shard["samples"]
        splits[name] = {
            "images_found": s["images_found"], "images_stored": s["images_stored"],
            "variants": s["variants"], "samples": s["samples"],
            "samples_per_variant": [per_variant.get(v, 0) for v in range(s["variants"])],
            "latent_shape": s["latent_shape"], "valid_region": s["valid_region"],
            "mean_bpp": s["mean_bpp"], "bytes_per_sample": s["bytes_per_sample"],
            "shards": len(s["shards"]), "bytes": sum(x["bytes"] for x in s["shards"]),
            "rejects": s["rejects"], "augment": s["config"]["augment"], "seed": s["config"]["seed"],
            "teacher": summarize_teacher(s),
        }
    return {"store": shown(store) if is_url(store) else str(store), "format_version": m["format_version"],
            "backend": m["backend"],
            "coder": coder["name"], "quality": coder["quality"], "channels": coder["channels"],
            "weights": weights, "trained_weights": weights["trained"], "splits": splits,
            "metric": weights.get("metric", "mse") if weights["source"] == "pretrained" else None,
            "path": coder.get("path", "single-pass"),
            "created_by": m["created_by"], "device": m["created_by"].get("device", "cpu"),
            "gpu": m["created_by"].get("gpu")}


def _device_line(summary: dict) -> str:
    """Where g_a/h_a ran, and on which CPUs a rebuild gives the same bytes (docs/FORMAT.md, "What is exact")."""
    recorded = summary["created_by"].get("numerics") or {"mode": "native"}
    if recorded["mode"] == "portable":
        cpu = ("on the CPU, numerics portable (CPU dispatch pinned to AVX2, MKL COMPATIBLE): a rebuild at the "
               "recorded versions gives the same bytes on any x86-64 CPU with AVX2")
    else:
        cpu = (f"on the CPU, numerics native ({recorded.get('cpu', 'CPU not recorded')}: ATen "
               f"{recorded.get('torch_cpu_capability', '?')}, oneDNN {recorded.get('onednn_isa', '?')}, MKL branch "
               f"{recorded.get('mkl_cbwr', '?')}): floats are this CPU family's; another family computes other "
               "last bits")
    if set_vars := recorded.get("env"):
        cpu += "\n          set: " + " ".join(f"{k}={v}" for k, v in set_vars.items())
    if summary.get("device", "cpu") == "cpu":
        return cpu
    return (f"g_a/h_a on {summary['device']} ({summary.get('gpu') or 'GPU model not recorded'}), the rest {cpu}; "
            "a rebuild matches only on the same GPU model and versions")


def store_keys(store) -> dict:
    """{split: every sample key of the split, variant by variant, in stored order}."""
    from ..store.keys import SplitKeys

    m = read_manifest(store)
    return {split: SplitKeys(local_root(store)[0], m, split).keys() for split in sorted(m["splits"])}


def render(summary: dict) -> str:
    w = summary["weights"]
    if not w["trained"]:
        weights = f"UNTRAINED - {w['note']}"
    elif w["source"] == "pretrained":
        weights = f"pretrained (CompressAI zoo, {summary['metric']}, {w['url'].rsplit('/', 1)[-1]})"
    else:
        weights = f"file {w['path']}"
    lines = [
        f"store     {summary['store']}  ({summary['backend']}, format v{summary['format_version']})",
        f"coder     {summary['coder']}  quality {summary['quality']}  ({summary['channels']} latent channels)"
        + ("  generic path: its own compress()/decompress(), no symbols" if summary["path"] == "generic" else ""),
        f"weights   {weights}",
        f"          sha256 {w['sha256']}",
        _encoder_line(summary["created_by"]),
        f"encoded   {_device_line(summary)}",
    ]
    for name, s in summary["splits"].items():
        c, h, wd = s["latent_shape"]
        r0, r1, c0, c1 = s["valid_region"]
        lines += [
            "",
            f"split {name!r}: {s['images_stored']} of {s['images_found']} images stored, "
            f"{s['variants']} variant(s) ({s['augment']} augmentation, seed {s['seed']}), {s['samples']} samples",
            f"  latent    {c}x{h}x{wd}, valid rows {r0}..{r1 - 1}, cols {c0}..{c1 - 1}",
            f"  mean bpp  {s['mean_bpp']:.4f}" if s["mean_bpp"] is not None else "  mean bpp  -",
            f"  shards    {s['shards']}, {s['bytes'] / 1e6:.2f} MB",
            "  bytes per sample:" if summary["backend"] != "zarr" else "  bytes per sample, by field:",
        ]
        lines += [f"    {_label(ext, summary['backend']):<22} {n:>12,.0f}" for ext, n in s["bytes_per_sample"].items()]
        lines += render_teacher(s["teacher"], summary.get("teacher_error", {}).get(name))
        lines.append(f"  rejects   {len(s['rejects'])}")
        lines += [f"    {r['source']}: {r['reason']}" for r in s["rejects"]]
    return "\n".join(lines)


def _label(ext: str, backend: str) -> str:
    """A tar store lists its member suffixes (y_hat.npy); a Zarr store has arrays, named by field."""
    if backend != "zarr":
        return ext
    field = field_for_member(ext)
    return field.name if field is not None else ext.removesuffix(".npy")


def _encoder_line(created_by: dict) -> str:
    revision = created_by.get("encoder_revision")
    line = (f"encoder   revision {revision}, latentstore {created_by.get('latentstore', '?')}, "
            f"torch {created_by.get('torch', '?')} at {created_by.get('torch_threads', '?')} thread(s)")
    if revision != ENCODER_REVISION:
        line += (f"\n          ANOTHER ENCODER REVISION (this latentstore writes {ENCODER_REVISION}): its ŷ need not "
                 "be what CompressAI decodes here (check: latentstore verify STORE --decode all); rebuild into a "
                 "new --out")
    return line
