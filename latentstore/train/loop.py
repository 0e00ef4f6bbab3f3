"""The training loop both trainer scripts share: store -> batches -> loss -> SGD, with exact resume.

Exactness: the epoch order is a function of (seed, epoch) (latentstore.read.dataset),
each step's randomness (dropout, ...) is seeded from (seed, step, rank), and a
checkpoint records the per-rank sample offset inside the epoch. A run
interrupted after any saved step and resumed therefore sees the same batches
with the same randomness as an uninterrupted one: same losses, same weights.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError, StoreError
from ..read.dataset import open_store
from . import checkpoint as ckpt
from .config import write_args
from .ddp import Dist, all_true, barrier, mean_over_ranks
from .log import RunLog, finished, headline, summary as run_summary
from .model import valid_crop
from .speed import StepMeter, autocast, autocast_dtype, make_loader, maybe_compile, prepare_model
from .stop import StopRequest
from .store_identity import store_summary
from .validate import BEST, Validator, val_split

#: (model, batch) -> (loss to backpropagate, {name: float tensor or number} to log)
LossFn = Callable[[nn.Module, dict], tuple]


def lr_factor(milestones) -> Callable[[int], float]:
    """LambdaLR factor: gamma ** (number of milestones reached); stateless, so it is not checkpointed."""
    def factor(epoch: int, _m=tuple(sorted(milestones))) -> float:
        return sum(epoch >= m for m in _m)
    return factor


@dataclass
class Position:
    """Where training stands: completed global steps, current epoch, samples per rank done in it."""
    step: int = 0
    epoch: int = 0
    offset: int = 0


def fit(cfg, d: Dist, model: nn.Module, loss_fn: LossFn, fields: tuple, milestones,
        extra_state: dict | None = None, task: str | None = None, student=None) -> Position:
    """Train `model` on cfg.store with `loss_fn`; returns where it stopped (all epochs, or cfg.max_steps).
    With `task` and `student` (latentstore.train.Student) it validates on --val-split and keeps best.pt."""
    if cfg.batch_size % d.world:
        raise ConfigError(f"--batch-size {cfg.batch_size} does not divide over {d.world} ranks")
    per_rank = cfg.batch_size // d.world
    # ŷ and teacher maps travel as stored (float16: half the bytes); model_inputs and the
    # transfer loss widen them on the device.
    data = open_store(cfg.store, cfg.split, fields=fields, seed=cfg.seed, shuffle=True,
                      shuffle_window=cfg.shuffle_window, batch_size=per_rank, drop_last=True,
                      remainder="drop", max_skips=cfg.max_skips, rank=d.rank, world=d.world,
                      y_hat_dtype=None, teacher_dtype=None)
    steps_per_epoch = len(data)  # equal on every rank by construction
    if steps_per_epoch == 0:
        raise ConfigError(f"{data.samples_per_rank()} samples per rank make no batch of {per_rank}: "
                          "lower --batch-size")
    prepare_model(model, cfg.precision, d.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    gamma_pow = lr_factor(milestones)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: cfg.gamma ** gamma_pow(e))
    summary = store_summary(data.manifest, data.split)
    split_for_val = val_split(cfg, data.manifest) if task else None
    # The validation split's own valid region: its samples need not be the training crops (Cityscapes val is
    # whole 1024x2048 images, train 640 crops).
    validator = Validator(cfg, d, task, split_for_val, student.inputs,
                          valid_crop(data.manifest["splits"][split_for_val]), summary["num_classes"],
                          per_rank) if split_for_val else None
    pos = _resume(cfg, d, model, opt, sched, summary, per_rank, validator)
    if finished(cfg, pos.step, pos.epoch):   # a rerun of a finished run says so, and changes nothing
        if d.main:
            print(run_summary(cfg.out, headline(cfg, pos.step, pos.epoch, rerun=True)), flush=True)
        return pos

    out = Path(cfg.out)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        write_args(cfg, out)
    barrier(d)
    total = cfg.epochs * steps_per_epoch if not cfg.max_steps else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    log = RunLog(out, d.main, total, pos.step, cfg.progress)
    net = DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None) \
        if d.distributed else model
    net = maybe_compile(net, cfg.compile)
    loader = make_loader(data, cfg.workers, d.device)

    def save(p: Position, val: dict | None = None) -> None:
        """last.pt at `p`; after a validation (`val`) that improved on the best, best.pt first."""
        if d.main:
            state = {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "config": cfg.as_dict(), "store": summary, "step": p.step, "epoch": p.epoch,
                "offset": p.offset, "world": d.world, "per_rank_batch": per_rank, "task": task,
                **(extra_state or {})}
            if validator is not None:
                state["best"] = validator.best
                if val is not None:
                    state["val"] = val
                    if validator.best is not None and validator.best["step"] == p.step:
                        ckpt.save(out / BEST, state)
            ckpt.save(out / ckpt.LAST, state)
        barrier(d)

    # Strict reads (the default) give every epoch exactly len(data) batches, so one pass of the
    # loader runs through all the remaining epochs and its workers read on into the next epoch
    # while this one ends (latentstore.read.dataset, 6). Lenient reads take one pass per epoch.
    one_pass = cfg.max_skips == 0
    batches = None
    try:
        with StopRequest() as stop:
            while pos.epoch < cfg.epochs and not (cfg.max_steps and pos.step >= cfg.max_steps):
                if batches is None or not one_pass:
                    data.set_epoch(pos.epoch, start=pos.offset, until=cfg.epochs if one_pass else None)
                    batches = iter(loader)
                count = data.items(pos.epoch, pos.offset) if one_pass else None
                if _epoch(cfg, d, net, opt, loss_fn, data, batches, count, pos, per_rank, log, save, stop):
                    pos.epoch, pos.offset = pos.epoch + 1, 0
                    sched.step()
                    val = None
                    if validator is not None and validator.due(pos.epoch):
                        val = validator.run(model)
                        validator.improved(val, pos.step, pos.epoch)
                        log.scalars(pos.step, pos.epoch - 1, val)
                    save(pos, val)
                    if d.distributed and not all_true(stop.signal is None, d):   # ranks stop together
                        stop.signal = stop.signal or signal.SIGTERM
                if stop.signal is not None and not finished(cfg, pos.step, pos.epoch):
                    raise stop.stopped(pos.step, out / ckpt.LAST)
    finally:
        del batches   # stops the loader's workers (reading ahead) before the run returns
        log.close()
    if data.skipped:
        log.message(f"{len(data.skipped)} damaged samples skipped (rank {d.rank})")
    if d.main:
        print(run_summary(out, headline(cfg, pos.step, pos.epoch)), flush=True)
    return pos


def _epoch(cfg, d, net, opt, loss_fn, data, batches, count: int | None, pos: Position, per_rank: int,
           log: RunLog, save, stop: StopRequest) -> bool:
    """Run the rest of epoch pos.epoch (from pos.offset): `count` batches from `batches`, or all it
    yields where `count` is None; False if cfg.max_steps or a stop signal ended it first (after
    saving). A step that ends the epoch returns True whatever stops the run, so the caller saves
    the checkpoint as end-of-epoch (offset 0 of the next epoch).

    A stop signal is honoured after the step it arrived in; under DDP the ranks agree on it at
    log and save steps, where they synchronise anyway.

    The step path never waits for the GPU: logged values stay on the device
    (StepMeter) until a log step, and ranks agree on the end of the epoch by an
    all_reduce only when lenient reads (max_skips) can end one rank early;
    strict reads give every rank len(data) batches.
    """
    net.train()
    dtype = autocast_dtype(cfg.precision, d.device.type)
    meter, t_wait, t_start, skipped = StepMeter(), 0.0, time.perf_counter(), 0
    lenient = cfg.max_skips > 0
    shown = (0.0, float("nan"))   # (samples/s, loss) on the progress bar, as of the last log step
    epoch_end = data.samples_per_rank(pos.epoch) // per_rank * per_rank   # offset after the epoch's last batch
    while count is None or count > 0:
        t0 = time.perf_counter()
        batch = next(batches, None)
        t_wait += time.perf_counter() - t0
        if (not all_true(batch is not None, d)) if lenient else batch is None:   # stop together
            if count is not None:
                raise StoreError(f"the loader ended {count} batches before the end of epoch {pos.epoch}")
            break
        count = None if count is None else count - 1
        torch.manual_seed(cfg.seed * 1_000_003 + pos.step * 7_919 + d.rank)   # per-step randomness
        with autocast(d.device.type, dtype):
            loss, parts = loss_fn(net, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pos.step, pos.offset = pos.step + 1, pos.offset + per_rank
        skipped += len(batch.get("__skipped__", ()))
        meter.add({"loss": loss, **parts})
        epoch_done = count == 0 if count is not None else pos.offset >= epoch_end
        at_max = bool(cfg.max_steps) and pos.step >= cfg.max_steps
        sync_step = pos.step % cfg.log_every == 0 or pos.step % cfg.save_every == 0
        if d.distributed and sync_step and not all_true(stop.signal is None, d):
            stop.signal = stop.signal or signal.SIGTERM      # a stop on any rank stops all of them
        halt = at_max or (stop.signal is not None and (sync_step or not d.distributed))
        if pos.step % cfg.log_every == 0 or halt or pos.epoch == cfg.epochs - 1 and epoch_done:
            values = mean_over_ranks(meter.means(), d)       # the step path's only host sync
            elapsed = time.perf_counter() - t_start
            rate = meter.steps * per_rank * d.world / max(elapsed, 1e-9)
            values.update(lr=opt.param_groups[0]["lr"], samples_per_s=rate, data_wait=t_wait / elapsed,
                          skipped=skipped)
            log.scalars(pos.step, pos.epoch, values)
            shown = (rate, values["loss"])
            meter.reset()
            t_wait, t_start = 0.0, time.perf_counter()
        log.step(*shown)
        if epoch_done:
            return True    # the caller saves it as end-of-epoch, then stops if halted
        if pos.step % cfg.save_every == 0 or halt:
            save(Position(pos.step, pos.epoch, pos.offset))
        if halt:
            return False
    return True


def _resume(cfg, d: Dist, model, opt, sched, summary: dict, per_rank: int, validator=None) -> Position:
    path = ckpt.find_resume(cfg.resume, cfg.out)
    if path is None:
        return Position()
    state = ckpt.load(path)
    ckpt.check_same_store(state["store"], summary, path)
    if state["config"]["model"] != cfg.model:
        raise ConfigError(f"Checkpoint {path} trains {state['config']['model']}, not --model {cfg.model}")
    changed = cfg.changed_hparams(state["config"])
    if changed and not cfg.resume_with_new_hparams:
        raise ConfigError(f"Checkpoint {path} was trained with other hyperparameters: {'; '.join(changed)}. "
                          "Rerun with the checkpoint's values, add --resume-with-new-hparams to change them "
                          "from this step on, or pass a new --out to start over")
    if state["offset"] and (state["world"], state["per_rank_batch"]) != (d.world, per_rank):
        raise ConfigError(
            f"Checkpoint {path} stopped mid-epoch with {state['world']} ranks x batch {state['per_rank_batch']}; "
            f"resuming with {d.world} x {per_rank} would not see exactly the unseen samples. Resume with "
            f"{state['world']} ranks, or from a checkpoint at an epoch end")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if validator is not None:
        validator.best = state.get("best")
    if changed:   # deliberate (--resume-with-new-hparams): the new values replace the saved ones
        sched.base_lrs = [cfg.lr] * len(opt.param_groups)
        for group in opt.param_groups:
            group.update(momentum=cfg.momentum, weight_decay=cfg.weight_decay, initial_lr=cfg.lr,
                         lr=cfg.lr * sched.lr_lambdas[0](sched.last_epoch))
        sched._last_lr = [group["lr"] for group in opt.param_groups]
        if d.main:
            print(f"resuming {path} with new hyperparameters: {'; '.join(changed)}", flush=True)
    return Position(state["step"], state["epoch"], state["offset"])
