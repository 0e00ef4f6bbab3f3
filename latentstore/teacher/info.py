"""The teacher lines of ``latentstore info``: plain dicts in, text out (no torch, so `info` starts fast)."""
from __future__ import annotations


def summarize_teacher(split_entry: dict) -> dict | None:
    """For `info`: the split's teacher, its taps and the bytes per sample of each teacher field."""
    fp = split_entry.get("teacher")
    if not fp:
        return None
    per = split_entry.get("bytes_per_sample", {})
    fields = {t["field"]: sum(n for ext, n in per.items() if ext.split(".")[0] == t["field"]) for t in fp["taps"]}
    return {"name": fp["name"], "weights": fp["weights"], "dtype": fp["dtype"], "mean": fp["mean"],
            "std": fp["std"], "taps": fp["taps"], "feature_shapes": fp["feature_shapes"],
            "bytes_per_sample": fields, "total_bytes_per_sample": sum(fields.values())}


def render_teacher(t: dict | None, errors: dict | None = None) -> list:
    """`info` lines for summarize_teacher's dict (and teacher_error's, when measured)."""
    if t is None:
        return []
    w = t["weights"]
    weights = (f"UNTRAINED - {w['note']}" if not w["trained"]
               else w.get("hf_hub_id") or w.get("url") or w.get("path") or w["source"])
    lines = [f"  teacher   {t['name']} ({weights}), {t['dtype']}, sha256 {w['sha256'][:16]}...",
             f"            mean {t['mean']} std {t['std']}; {t['total_bytes_per_sample']:,.0f} bytes per sample"]
    for tap in t["taps"]:
        shape = "x".join(map(str, t["feature_shapes"][tap["field"]]))
        lines.append(f"    {tap['field']:<16} {tap['layer']:<10} stride {tap['stride']:<3} {shape:<14} "
                     f"{t['bytes_per_sample'][tap['field']]:>12,.0f} B")
    if errors:
        lines.append(f"  teacher relative error vs float32 ({errors['samples']} samples; stored {errors['dtype']}):")
        for dtype, per in errors["relative_error"].items():
            lines.append(f"    {dtype:<9} " + "  ".join(f"{f} {e:.2e}" for f, e in per.items()))
        worst = max(errors["stored_vs_live"].values(), default=0.0)
        lines.append(f"    stored vs live teacher (after {errors['dtype']} rounding): {worst:.2e}")
    return lines


def teacher_flags(identity: dict) -> str:
    """The teacher arguments of a recorded build identity as flags ('' without a teacher): what a
    rerun of a store's build command must add once add-teacher (or --teacher) put teacher maps in it."""
    if not identity.get("teacher"):
        return ""
    flags = []
    for name in ("teacher", "teacher_weights", "teacher_strides", "teacher_layers", "teacher_dtype"):
        value = identity.get(name)
        if value is None or value == [] or value == ():
            continue
        text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        flags.append(f"--{name.replace('_', '-')} {text}")
    return " ".join(flags)
