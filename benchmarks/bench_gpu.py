"""One device run: build throughput (CPU-only encoders and --device cuda), the pure step rate of
resnet50-aa, and the trainer's samples/s and data wait on a store it builds itself; printed side by side.

    bash benchmarks/bench_gpu.sh                 # on the GPU node (full sizes, ~5-7 min)
    SMOKE=1 bash benchmarks/bench_gpu.sh         # anywhere, tiny sizes, ~2-3 min on 2 CPU cores

Everything runs from the source tree (``python -m latentstore``, ``train/classify.py``), with
generated images and untrained seeded weights: nothing is downloaded. Each measurement is a short
timed window, not a whole dataset. It runs (b) and (c) first, then (a), so a run cut by --budget
loses build rows rather than the trainer's:

(a) build img/s: cheng2020-anchor q3, 224 crops (padded to 256), --encoders 1, 2, 4, ... on the CPU
    (12 samples per encoder, so every run lasts about as long), then the same work as the largest
    run with --device cuda; then CPU-only and --device cuda for bmshj2018-hyperprior q3 (no serial
    loop: what moving g_a to the GPU gives where it is most of the work). Two rates per run: wall (command start to end, process start-up
    included) and steady (from the commit by which every process has finished one group to the
    last commit, from the commit records' times). ``verify --decode`` checks that CompressAI
    decodes the strings to the stored ŷ, on both stores.
(b) pure step rate: resnet50-aa at batch 256 on random latents on the GPU (SGD step, no data), fp32
    and bf16 autocast + channels_last, the trainer's own settings (latentstore.train.speed).
(c) trainer: train/classify.py, fp32 and bf16, on a store of 8,192 samples (shards of 1,000, the
    default, so 12 workers share every shard as on ImageNet; 32 steps per epoch) built with all encoders
    (--device cuda where there is a GPU) with bmshj2018-hyperprior q3, a coder without the serial
    loop, so it takes seconds; samples/s and data wait per logged quarter epoch (checkpoint saves
    at epoch ends excluded), the first epoch dropped: pooled over whole epochs, and within epochs
    (each epoch's first window dropped too). Before it, the trainer's DataLoader alone (no model,
    each batch copied to the device; then also sleeping the pure bf16 step time per batch, as the host
    waits for the GPU), ŷ as stored or widened to float32 in the workers, one pass through all
    epochs or a pass per epoch.
(d) (c) / (b).
(e) what --device cuda leaves on the CPU: benchmarks/profile_context_loop.py (the build's coder per
    image at one thread, by stage, and its serial loop by operator), last, if the budget allows.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- inputs

def _image(args) -> None:
    """One smooth random RGB image (JPEG), so the coder's symbols are not trivial."""
    path, size, seed = args
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.random((size // 16, size // 16, 3)).astype(np.float32)
    img = Image.fromarray((small * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 12, (size, size, 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_images(root: Path, count: int, size: int, classes: int) -> Path:
    jobs = []
    for i in range(count):
        folder = root / "train" / f"c{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        jobs.append((folder / f"img{i:05d}.jpg", size, i))
    with Pool(min(16, os.cpu_count() or 1)) as pool:
        pool.map(_image, jobs, chunksize=16)
    return root


# --------------------------------------------------------------------------- (a) builds

DEADLINE = [float("inf")]   # perf_counter() by which every command must have ended (--budget)


def run(cmd: list, logfile: Path, timeout: float, env=None, errfile: Path | None = None) -> tuple[int, float]:
    """Run cmd (killed at `timeout` or at the run's deadline, whichever is first): (returncode, seconds).
    Its output goes to `logfile`, its stderr too unless `errfile` is given."""
    started = time.perf_counter()
    timeout = max(1.0, min(timeout, DEADLINE[0] - started))
    with open(logfile, "w") as f, open(errfile or os.devnull, "w") as err:
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=err if errfile else subprocess.STDOUT, timeout=timeout,
                                cwd=ROOT, env=env).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    return rc, time.perf_counter() - started


#: (coder, quality) of the build measurement and of the trainer's store
BUILD_CODER, TRAIN_CODER = ("cheng2020-anchor", 3), ("bmshj2018-hyperprior", 3)


def build_rate(a, images: Path, out: Path, encoders: int, limit: int, device: str, shard: int,
               timeout: float | None = None, coder=BUILD_CODER) -> dict:
    cmd = [PY, "-m", "latentstore", "build", "--coder", coder[0], "--quality", str(coder[1]),
           "--weights", "untrained", "--dataset", "imagefolder", "--root", str(images), "--out", str(out),
           "--limit", str(limit), "--crop", str(a.crop), "--shard-size", str(shard), "--encoders", str(encoders),
           "--device", device, "--quiet"]
    rc, wall = run(cmd, out.with_suffix(".log"), timeout or a.build_timeout)
    res = {"coder": f"{coder[0]} q{coder[1]}", "encoders": encoders, "device": device, "samples": limit, "rc": rc, "wall_s": round(wall, 2),
           "wall_img_s": limit / wall if rc == 0 else None}
    times = sorted(p.stat().st_mtime for p in (out / "train").glob("group-*.json")) if (out / "train").exists() else []
    res["groups_committed"] = len(times)
    if len(times) > encoders:
        # steady state: from the commit by which every process has finished one group to the last
        # (also for a run cut by its timeout: every committed group holds `shard` images)
        res["steady_img_s"] = shard * (len(times) - encoders) / max(times[-1] - times[encoders - 1], 1e-6)
    if rc != 0:
        res["error"] = out.with_suffix(".log").read_text()[-2000:]
    log(f"build {device} --encoders {encoders}: {limit} samples in {wall:.1f} s (rc {rc}) "
        f"wall {res['wall_img_s'] or 0:.1f} img/s, steady {res.get('steady_img_s') or 0:.1f} img/s")
    return res


def verify(store: Path, decode: int, timeout: float) -> dict:
    rc, wall = run([PY, "-m", "latentstore", "verify", str(store), "--decode", str(decode), "--quiet"],
                   store.with_suffix(".verify.log"), timeout)
    text = store.with_suffix(".verify.log").read_text()
    log(f"verify --decode {decode} {store.name}: rc {rc} ({wall:.1f} s) {text.strip().splitlines()[-1:]}")
    return {"store": store.name, "decode": decode, "rc": rc, "ok": rc == 0, "tail": text[-600:]}


# --------------------------------------------------------------------------- (b) pure step rate

def step_rate(a, channels: int, classes: int, precision: str) -> dict:
    import torch
    import torch.nn.functional as F

    from latentstore.models import create_model
    from latentstore.train.speed import autocast, autocast_dtype, prepare_model

    device = torch.device(a.device)
    torch.manual_seed(0)
    model = create_model(a.model, channels, classes)
    prepare_model(model, precision, device)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(a.batch, channels, a.latent, a.latent, device=device)
    y = torch.randint(0, classes, (a.batch,), device=device)
    dtype = autocast_dtype(precision, device.type)

    def step():
        with autocast(device.type, dtype):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(a.warmup):
        step()
    sync()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < a.window:
        for _ in range(5):
            step()
        steps += 5
        sync()
    elapsed = time.perf_counter() - started
    rate = steps * a.batch / elapsed
    log(f"pure step rate {a.model} batch {a.batch} {precision}: {rate:,.0f} img/s ({steps} steps, {elapsed:.1f} s)")
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"precision": precision, "img_s": rate, "steps": steps, "seconds": elapsed}


# --------------------------------------------------------------------------- (c) loader alone, trainer

LOADER_MODES = (  # (ŷ in the batches, one pass through all epochs, at the bf16 step time)
    ("stored", True, False),     # what the loader can feed at most
    ("stored", True, True),      # the trainer now
    ("stored", False, True),     # a pass per epoch: the workers start each epoch cold
    ("float32", False, True),    # the trainer before 2026-11-30: also twice the bytes per batch
)


def loader_rate(a, store: Path, y_hat_dtype: str, one_pass: bool, step_s: float) -> dict:
    """The trainer's DataLoader (same workers, pinning, batch) without the model: each batch is copied
    to the device and widened, then the host sleeps `step_s` (0: not at all) as it would wait for a GPU
    step. Samples/s and data wait (time in next(batch)) over the epochs after the first."""
    import torch

    from latentstore.read.dataset import open_store
    from latentstore.train.speed import make_loader

    device = torch.device(a.device)
    data = open_store(store, fields=("y_hat", "label"), seed=0, shuffle=True, batch_size=a.batch,
                      drop_last=True, y_hat_dtype=None if y_hat_dtype == "stored" else torch.float32)
    loader = make_loader(data, a.workers, device)
    epochs, batches = a.loader_epochs + 1, None     # the first epoch starts the workers: dropped
    if one_pass:
        data.set_epoch(0, until=epochs)
        batches = iter(loader)
    per_epoch = []
    for epoch in range(epochs):
        if not one_pass:
            data.set_epoch(epoch)
            batches = iter(loader)
        started, wait, n = time.perf_counter(), 0.0, 0
        for _ in range(data.items(epoch)):
            t0 = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - t0
            n += batch["y_hat"].to(device, non_blocking=True).float().shape[0]
            if step_s:
                time.sleep(step_s)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_epoch.append((n, time.perf_counter() - started, wait))
    n, seconds, wait = map(sum, zip(*per_epoch[1:]))
    res = {"y_hat": y_hat_dtype, "one_pass": one_pass, "step_ms": 1000 * step_s, "samples_s": n / seconds,
           "data_wait": wait / seconds, "epochs": a.loader_epochs}
    log(f"loader alone, y_hat {y_hat_dtype}, {'one pass' if one_pass else 'a pass per epoch'}, step "
        f"{1000 * step_s:.1f} ms: {res['samples_s']:,.0f} samples/s, data wait {100 * res['data_wait']:.1f}%")
    del batches, loader
    return res


def _windows(rows: list) -> dict:
    """Per logged window {step: {name: value}}, by step."""
    by_step: dict = {}
    for r in rows:
        by_step.setdefault(int(r["step"]), {})[r["name"]] = float(r["value"])
    return by_step


def _pooled(windows: list, batch: int, steps: int) -> tuple[float, float]:
    """(samples/s, data-wait fraction) over windows of `steps` steps each, weighted by their time."""
    seconds = [steps * batch / w["samples_per_s"] for w in windows]
    total = sum(seconds)
    return steps * batch * len(windows) / total, sum(w["data_wait"] * t for w, t in zip(windows, seconds)) / total


def trainer(a, store: Path, out: Path, precision: str, pure: float, samples: int) -> dict:
    """train/classify.py, logged every quarter epoch. Two figures: whole epochs (all windows but the
    first epoch's), and within epochs (also without each epoch's first window, whose first batch
    waits for the workers to read their first shards: on a 16-step epoch that start weighs ~1/16,
    on an ImageNet epoch of 5,000 steps nothing)."""
    per_epoch = samples // a.batch
    log_every = max(1, per_epoch // 4)
    steps = max(3 * per_epoch, int(pure * a.window / a.batch) // per_epoch * per_epoch + per_epoch)
    epochs = steps // per_epoch
    cmd = [PY, "train/classify.py", "--store", str(store), "--out", str(out), "--model", a.model,
           "--batch-size", str(a.batch), "--workers", str(a.workers), "--precision", precision,
           "--epochs", str(epochs), "--max-steps", str(steps), "--log-every", str(log_every),
           "--save-every", str(10 ** 9), "--device", a.device, "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    rc, wall = run(cmd, out.with_suffix(".log"), a.train_timeout, env=env)
    res = {"precision": precision, "rc": rc, "wall_s": round(wall, 2), "steps": steps, "epochs": epochs}
    rows = []
    if (out / "metrics.csv").is_file():
        with open(out / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    by_step = _windows(rows)
    # the first epoch warms up (cuDNN, workers); windows ending at a multiple of log_every only
    later = [(step, w) for step, w in sorted(by_step.items()) if step > per_epoch and step % log_every == 0]
    if later:
        res["samples_s"], res["data_wait"] = _pooled([w for _, w in later], a.batch, log_every)
        res["windows"] = len(later)
        res["ratio_to_pure"] = res["samples_s"] / pure if pure else None
        inner = [w for step, w in later if (step - log_every) % per_epoch]   # not an epoch's first window
        if inner:
            res["inner_samples_s"], res["inner_data_wait"] = _pooled(inner, a.batch, log_every)
            res["inner_ratio_to_pure"] = res["inner_samples_s"] / pure if pure else None
    if rc != 0:
        res["error"] = out.with_suffix(".log").read_text()[-2000:]
    log(f"trainer {precision}: rc {rc}, {res.get('samples_s', 0):,.0f} samples/s, data wait "
        f"{100 * res.get('data_wait', 0):.1f}%; within epochs {res.get('inner_samples_s', 0):,.0f} samples/s, "
        f"data wait {100 * res.get('inner_data_wait', 0):.1f}%; {res.get('windows', 0)} windows ({wall:.0f} s)")
    return res


def training(a, r: dict, images: Path, train_store: Path, encoders: int, save) -> None:
    """(b) pure step rate, (c) loader alone and trainer, on a store built here; (d) is the table's."""
    # The trainer's store (8,192 samples): a coder without the serial loop, so it is built in
    # seconds; the trainer and its reader see only ŷ [C, 16, 16] and labels.
    r["train_build"] = build_rate(a, images, train_store, encoders, a.train_images, a.device, a.train_shard,
                                  timeout=a.gpu_build_timeout, coder=TRAIN_CODER)
    r["verify"].append(verify(train_store, 4, 60))
    r["train_samples"] = a.train_images
    save()
    manifest = json.loads((train_store / "manifest.json").read_text()) if (train_store / "manifest.json").exists() else None
    channels = manifest["coder"]["channels"] if manifest else 192
    for precision in ("fp32", "bf16"):
        r["pure"].append(step_rate(a, channels, 10, precision))
        save()
    if not manifest:
        return
    step_s = a.batch / r["pure"][-1]["img_s"]     # the bf16 step
    r["loader"] = [loader_rate(a, train_store, dtype, one_pass, step_s if at_step else 0.0)
                   for dtype, one_pass, at_step in LOADER_MODES]
    save()
    # bf16 first: the default on CUDA and the target's figure, so a run cut by --budget keeps it
    for precision, pure in reversed(list(zip(("fp32", "bf16"), r["pure"]))):
        if DEADLINE[0] - time.perf_counter() < 20:
            log(f"trainer {precision}: skipped, out of time (--budget {a.budget:.0f} s)")
            continue
        r["trainer"].append(trainer(a, train_store, train_store.parent / f"train-{precision}", precision,
                                    pure["img_s"], a.train_images))
        save()


def builds(a, r: dict, images: Path, work: Path, most: int, has_gpu: bool, save) -> None:
    """(a) CPU-only scaling and the --device cuda build of the largest run's work, with verify --decode.

    Samples are proportional to encoders, so each run lasts about as long, with 4 groups per process:
    a steady window after every process has committed its first. 1 and `most` encoders and the cuda
    build come first (the targets' figures), the series between them after.
    """
    order = [1, most] + [n for n in a.encoders if n not in (1, most)]
    for n in dict.fromkeys(order):
        r["builds"].append(build_rate(a, images, work / f"cpu-e{n}", n, a.per_encoder * n, "cpu",
                                      max(1, a.per_encoder // 4)))
        save()
        if n == most and has_gpu:   # the same work with g_a/h_a on the GPU
            gpu_store = work / f"cuda-e{n}"
            r["builds"].append(build_rate(a, images, gpu_store, n, a.per_encoder * n, "cuda",
                                          max(1, a.per_encoder // 4), timeout=a.gpu_build_timeout))
            save()
            if r["builds"][-1]["rc"] == 0:
                r["verify"].append(verify(gpu_store, a.decode, 60))
            r["verify"].append(verify(work / f"cpu-e{n}", a.decode, 60))
            # The pair again for a coder without cheng2020's serial loop, whose CPU share the GPU cannot
            # take: 4x the samples (its g_a is cheaper), so the steady window is as long.
            for device in ("cpu", "cuda"):
                r["builds"].append(build_rate(a, images, work / f"{device}-e{n}-hyper", n, 4 * a.per_encoder * n,
                                              device, a.per_encoder, timeout=a.gpu_build_timeout, coder=TRAIN_CODER))
                save()
        elif n == most:
            log("no GPU: the --device cuda build is skipped")
            r["verify"].append(verify(work / f"cpu-e{n}", a.decode, 60))


# --------------------------------------------------------------------------- report

def _rate(b: dict):
    """A build's img/s: steady where measured, else wall."""
    return b.get("steady_img_s") or b.get("wall_img_s")


def table(r: dict) -> str:
    lines = [f"bench_gpu {r['date']}  {r['machine']}  ({'SMOKE' if r['smoke'] else 'full'})", ""]
    lines.append("(a) build, untrained weights, %d px crops padded to %d:" % (r["crop"], r["padded"]))
    lines.append(f"    {'mode':<22}{'samples':>8}{'wall s':>9}{'img/s wall':>12}{'img/s steady':>14}{'vs 1 enc':>10}")
    by_coder, ratios = {}, []
    for b in r["builds"]:
        by_coder.setdefault(b.get("coder", "%s q%d" % BUILD_CODER), []).append(b)
    for coder, runs in by_coder.items():
        lines.append(f"  {coder}:")
        one = next((_rate(b) for b in runs if b["encoders"] == 1 and b["device"] == "cpu" and _rate(b)), None)
        for b in sorted(runs, key=lambda b: (b["device"] != "cpu", b["encoders"])):
            vs = f"{_rate(b) / one:.2f}x" if _rate(b) and one else "-"
            lines.append(f"    {b['device'] + ' --encoders ' + str(b['encoders']):<22}{b['samples']:>8}"
                         f"{b['wall_s']:>9.1f}{b.get('wall_img_s') or 0:>12.1f}{b.get('steady_img_s') or 0:>14.1f}"
                         f"{vs:>10}" + ("" if b["rc"] == 0 else f"  FAILED rc {b['rc']}"))
        cpu_all = max((b for b in runs if b["device"] == "cpu" and _rate(b)), key=lambda b: b["encoders"], default=None)
        gpu = next((b for b in runs if b["device"] == "cuda" and _rate(b)), None)
        if cpu_all and one and cpu_all["encoders"] > 1:
            ratios.append(f"    {coder}: cpu --encoders {cpu_all['encoders']} / 1: {_rate(cpu_all) / one:.2f}x "
                          "(target >= 12x at 16)")
        if cpu_all and gpu:
            ratios.append(f"    {coder}: --device cuda / cpu --encoders {cpu_all['encoders']}: "
                          f"{_rate(gpu) / _rate(cpu_all):.2f}x (target >= 4x)")
    for v in r["verify"]:
        lines.append(f"    verify --decode {v['decode']} {v['store']}: {'exact' if v['ok'] else 'FAILED rc %d' % v['rc']}")
    lines += ratios + [""]
    lines.append(f"(b) pure step rate, {r['model']} batch {r['batch']}, random {r['latent']}x{r['latent']} latents, "
                 f"SGD, {r['device']}:")
    for p in r["pure"]:
        lines.append(f"    {p['precision']:<6}{p['img_s']:>10,.0f} img/s")
    tb = r.get("train_build") or {}
    lines.append(f"(c) trainer train/classify.py on a {tb.get('coder', '?')} store built on {tb.get('device', '?')} "
                 f"({r['train_samples']} samples/epoch, {_rate(tb) or 0:.0f} img/s, {r['workers']} workers), "
                 "(d) = (c)/(b):")
    if r.get("loader"):
        lines.append(f"    the trainer's DataLoader alone (batches copied to the device; 'at step' sleeps the pure "
                     f"bf16 step time, {r['loader'][-1]['step_ms']:.1f} ms, per batch):")
        lines.append(f"    {'y_hat':<9}{'epochs':<18}{'step':<9}{'samples/s':>10}{'data wait':>11}")
        for ld in r["loader"]:
            lines.append(f"    {ld['y_hat']:<9}{'one pass' if ld['one_pass'] else 'a pass per epoch':<18}"
                         f"{'at step' if ld['step_ms'] else 'none':<9}{ld['samples_s']:>10,.0f}"
                         + (f"{100 * ld['data_wait']:>10.1f}%" if ld["step_ms"] else f"{'-':>11}"))
    lines.append(f"    {'':<6}{'whole epochs':-^34}   {'within epochs':-^34}")
    lines.append((f"    {'':<6}" + f"{'samples/s':>10}{'data wait':>11}{'(d) of pure':>13}   " * 2).rstrip())
    for t in sorted(r["trainer"], key=lambda t: t["precision"] != "fp32"):
        cells = ""
        for prefix in ("", "inner_"):
            d = t.get(prefix + "ratio_to_pure")
            cells += (f"{t.get(prefix + 'samples_s', 0):>10,.0f}{100 * t.get(prefix + 'data_wait', 0):>10.1f}%"
                      f"{(100 * d if d else 0):>12.1f}%   ")
        lines.append(f"    {t['precision']:<6}{cells.rstrip()}" + ("" if t["rc"] == 0 else f"  FAILED rc {t['rc']}"))
    lines.append("    targets: bf16 trainer >= 90% of pure bf16, data wait < 5%")
    share = r.get("cpu_share")
    if share:
        lines.append("(e) what --device cuda leaves on the CPU (benchmarks/profile_context_loop.py):")
        lines += [line and "    " + line for line in share["text"].splitlines()] if share["rc"] == 0 else \
            [f"    FAILED rc {share['rc']}"]
    return "\n".join(lines)


def cpu_share(a, r: dict, work: Path) -> None:
    """(e) The build coder's per-image stages and loop operators on this node's CPU, one thread."""
    logfile = work / "profile_context_loop.log"
    rc, wall = run([PY, str(ROOT / "benchmarks" / "profile_context_loop.py"), "--coder", BUILD_CODER[0],
                    "--quality", str(BUILD_CODER[1]), "--images", "2" if a.smoke else "4"], logfile, 120,
                   errfile=logfile.with_suffix(".err"))
    r["cpu_share"] = {"rc": rc, "text": logfile.read_text()}
    log(f"CPU share per image: rc {rc} ({wall:.1f} s)")


def machine(device: str) -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "no GPU"
    return f"{gpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or "/tmp/bench_gpu")
    p.add_argument("--work", default=os.environ.get("BENCH_WORK") or "/tmp/bench_gpu_work",
                   help="images, stores and runs (large; only results and logs go to --out)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on any machine (CPU)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds by which every stage has ended (later stages are cut or skipped); "
                        "default 540, smoke 1200")
    a = p.parse_args(argv)
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    has_gpu = torch.cuda.is_available()
    if a.smoke:
        a.crop, a.model, a.batch, a.window, a.warmup, a.workers = 64, "resnet18-aa", 4, 2.0, 1, 2
        a.images, a.encoders, a.per_encoder, a.train_images, a.shard, a.train_shard = 16, [1, 2], 8, 16, 4, 4
        a.build_timeout, a.gpu_build_timeout, a.train_timeout, a.decode = 300, 300, 300, 2
        a.loader_epochs = 2
    else:
        a.crop, a.model, a.batch, a.window, a.warmup, a.workers = 224, "resnet50-aa", 256, 15.0, 15, min(12, cores)
        a.encoders = [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= cores]
        a.per_encoder, a.train_images, a.shard, a.train_shard = 12, 8192, 32, 1000
        a.images = max(a.train_images, a.per_encoder * a.encoders[-1])
        # 16 encoder processes took over 50 s to start and seal 192 samples (2026-11-30): 120 s each
        a.build_timeout, a.gpu_build_timeout, a.train_timeout, a.decode = 120, 120, 100, 16
        a.loader_epochs = 3
    a.device = "cuda" if has_gpu else "cpu"
    padded = -(-a.crop // 64) * 64
    a.latent = a.crop // 16
    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    started = time.perf_counter()
    a.budget = a.budget or (1200 if a.smoke else 540)
    DEADLINE[0] = started + a.budget
    r = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(a.device), "smoke": a.smoke,
         "crop": a.crop, "padded": padded, "model": a.model, "batch": a.batch, "latent": a.latent,
         "device": a.device, "workers": a.workers, "builds": [], "verify": [], "pure": [], "trainer": []}

    def save():
        r["seconds"] = round(time.perf_counter() - started, 1)
        (out / "bench_gpu.json").write_text(json.dumps(r, indent=1))

    log(f"{r['machine']}; generating {a.images} images")
    images = make_images(work / "images", a.images, max(a.crop + 32, 256 if not a.smoke else 96), classes=10)

    # The trainer first (the least certain target), then the builds, so a run cut by --budget
    # loses the middle of the encoder scaling series, not the trainer.
    n = a.encoders[-1]
    training(a, r, images, work / "train-store", n, save)
    builds(a, r, images, work, n, has_gpu, save)
    cpu_share(a, r, work)
    save()
    text = table(r)
    (out / "bench_gpu.txt").write_text(text + "\n")
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    for f in list(work.glob("*.log")) + list(work.glob("train-*/metrics.csv")):
        (logs / (f.parent.name + "-" + f.name if f.name == "metrics.csv" else f.name)).write_bytes(f.read_bytes())
    save()
    log(f"done in {time.perf_counter() - started:.0f} s; results in {out}")
    print("\n" + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
