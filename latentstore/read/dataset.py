"""One split of a store as a torch IterableDataset (`open_store`): its epoch, order and random access.

How one epoch is read (docs/reliability.md §8-§11):

1. Epoch e reads stored variant ``e mod K`` (or a fixed ``variant=``).
2. The epoch's global order G is a list of (shard, sample index) pairs computed
   from the manifest alone: with ``shuffle=True`` the variant's shards are
   permuted with a generator seeded by (seed, epoch), cut into windows of
   ``shuffle_window`` consecutive shards, and the samples of each window are
   permuted in memory. Without shuffle, G is store order. G never depends on
   ranks, workers or batch size.
3. Rank r of W takes the contiguous slice G[r*n:(r+1)*n], where n = N // W
   (``remainder="drop"``: the last N mod W samples of G are skipped this epoch;
   they are different samples every epoch when shuffling) or n = ceil(N / W)
   (``remainder="pad"``: G is extended with its own first samples, as
   torch's DistributedSampler does). Every rank gets exactly n samples, so
   every rank runs the same number of steps. Concatenating the ranks' outputs
   in rank order gives G (drop: its first W*n; pad: G plus its first W*n-N).
   ``remainder="keep"`` (evaluation) gives rank r G[r*N//W:(r+1)*N//W]: every
   sample exactly once, ranks differing by at most one sample.
4. ``start=s`` skips the first s samples of every rank's slice (mid-epoch
   resume: a checkpoint after k steps of batch b resumes with start=k*b).
5. With ``batch_size`` set, the dataset yields collated batches and batch i of
   a rank goes to DataLoader worker i mod workers. The DataLoader (with
   ``batch_size=None``) takes one item from each worker in turn, so the
   sequence of batches is the same for 0, 1 or 8 workers. Without
   ``batch_size`` samples are dealt out the same way.
6. ``set_epoch(e, start, until=u)`` makes one pass read epochs e, e+1, ...,
   u-1 back to back, each exactly as a pass of its own would (item i of the
   pass goes to worker i mod workers), so a trainer's workers read on into
   the next epoch instead of starting cold at every epoch. Strict reads
   only: a lenient epoch may yield fewer items, and the epochs could then
   not be told apart.

Trade-off: tar shards cannot be read at random cheaply, so shuffling is
"shard order + in-memory window", not a full permutation of the split. A
worker walks every shard that holds one of its samples (sequentially) but
reads and decodes only its own samples' bytes: a tar shard's other members
are seeked over, so k workers read each sample once between them, and check
each against its CRC-32C in the shard's sample index (a store without one:
the whole shard's CRC, once per process). Memory per worker: its share of
about one window of decoded samples.

The pieces: order.py computes G and each rank's and worker's share (pure
functions of lists); ``__iter__`` chains the generator stages of stages.py over
this worker's share (read units -> decode -> skip budget -> DDP lockstep
padding -> items). In a DataLoader worker of a local store, ahead.py begins
the pass that usually follows once this worker's share of a pass is read out,
so that the next pass's first item is ready when it is asked for.
``readers.read_samples`` yields the samples of one shard record
(``info["shards"][i]``) in stored order, for either backend, as typed Samples;
the dataset hands them out as dicts of tensors. Strict reads raise StoreError
naming shard and key; with ``max_skips > 0`` damaged samples are skipped,
listed in ``dataset.skipped`` and in the ``__skipped__`` entry of the next
item, and the read fails once more than ``max_skips`` were skipped.
"""
from __future__ import annotations

import contextlib
import inspect
from collections import deque
from functools import partial
from itertools import islice

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ConfigError, StoreError
from ..store.format import FIELDS, read_manifest
from ..store.keys import SplitKeys, check_fields, read_tar_sample
from ..store.remote import local_root
from ..store.readers import BACKENDS, read_samples
from ..teacher.decode import TeacherDecoder
from . import stages
from .ahead import Ahead, following
from .options import DEFAULT_FIELDS, ReadOptions, option_parameters
from .order import EpochOrder, batch_units, epoch_order, rank_share, rank_slice, worker_share
from .ranks import rank_and_world
from .tensors import collate, to_tensors

__all__ = ["DEFAULT_FIELDS", "LatentDataset", "ReadOptions", "collate", "open_store", "pick_split", "to_tensors"]

#: Windows of shards a remote store's reader fetches ahead of the one it reads.
PREFETCH_WINDOWS = 2


def pick_split(manifest: dict, split: str | None, store) -> str:
    splits = sorted(manifest["splits"])
    if split is None:
        if len(splits) != 1:
            raise ConfigError(f"{store} holds splits {', '.join(splits)}: pass split=...")
        return splits[0]
    if split not in manifest["splits"]:
        raise ConfigError(f"{store} has no split {split!r}: it holds {', '.join(splits)}")
    return split


class LatentDataset(IterableDataset):
    """The samples of one split, streamed from its shards with strict checks (`ReadOptions`: how;
    the module docstring: in which order)."""

    def __init__(self, path, split: str | None = None, options: ReadOptions = ReadOptions()):
        # A store at a URL is read through a local mirror, each shard fetched whole on first use.
        self.path, self.remote = local_root(path, options.storage_options, options.cache_dir,
                                            keep_damaged=options.max_skips > 0)
        self.manifest = read_manifest(self.path)
        self.split = pick_split(self.manifest, split, self.path)
        self.info = self.manifest["splits"][self.split]
        self.backend = self.manifest.get("backend", "webdataset")
        if self.backend not in BACKENDS:
            raise StoreError(f"{self.path} uses backend {self.backend!r}; this latentstore reads "
                             f"{', '.join(BACKENDS)}")
        fields = check_fields(options.fields, self.info, self.path, self.split)
        self.teacher = TeacherDecoder(self.info, fields, options.teacher_dtype)  # teacher_s8 ... -> float tensors
        unknown = set(fields) - set(FIELDS) - self.teacher.fields
        if unknown:
            raise ConfigError(f"Unknown fields {sorted(unknown)}: choose from "
                              f"{', '.join([*FIELDS, *sorted(self.teacher.fields)])}")
        if options.variant is not None and not 0 <= options.variant < self.info["variants"]:
            raise ConfigError(f"variant {options.variant} out of range: {self.path} stores {self.info['variants']}")
        options.check()
        self.options = options
        self.fields, self.variant = tuple(fields), options.variant
        self._position = _shared_position()
        self.start = options.start
        self._resume_start = options.start  # consumed by the first set_epoch without a start
        self.epoch = 0
        self.skipped: list[str] = []
        self._keys: SplitKeys | None = None      # random access: built on first use
        self._zarr_keys = None
        self._ahead: Ahead | None = None  # a DataLoader worker's next pass, begun early
        self._arrays = None  # a remote Zarr store: the arrays whose chunk files are fetched (a tar shard: whole)
        if self.remote and self.backend == "zarr":
            from ..store.zarr.reader import arrays_read
            self._arrays = arrays_read(self.teacher.read_fields(self.fields))
        # DataLoader workers do not see the process group: resolve it here, in the main process.
        self._dist = rank_and_world()

    # ------------------------------------------------------------------ random access

    def keys(self, variant: int | None = None) -> list[str]:
        """The split's sample keys (``<item>_v<variant:03d>``) of `variant` in stored order; None: the
        variant this epoch reads. ``ds[i]`` is ``ds[ds.keys()[i]]``."""
        variant = self.current_variant if variant is None else variant
        if not 0 <= variant < self.info["variants"]:
            raise ConfigError(f"variant {variant} out of range: {self.path} stores {self.info['variants']}")
        return self._key_index().keys(variant)

    def __getitem__(self, key: str | int) -> dict:
        """One sample by key, or by position in ``keys()``, with the fields and dtypes of iteration.

        A sample is read alone: a Zarr sample as a slice of its chunks, a tar sample as one read of
        its span in the shard's sample index.
        """
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            key = self._key_index().key_at(self.current_variant, int(key))
        shard, index = self._key_index().locate(key)
        fields = self.teacher.read_fields(self.fields)
        with self._held(shard):
            if self.backend == "zarr":
                from ..store.zarr.reader import KeyIndex
                if self._zarr_keys is None:
                    self._zarr_keys = KeyIndex(self.path, self.manifest, self.split)
                sample = self._zarr_keys.get(key, fields)
            else:
                sample = read_tar_sample(self.path, shard, index, key, fields)
        return stages.as_dict(sample, self.teacher, self.options.y_hat_dtype)

    def _key_index(self) -> SplitKeys:
        if self._keys is None:
            self._keys = SplitKeys(self.path, self.manifest, self.split)
        return self._keys

    # ------------------------------------------------------------------ the epoch

    def set_epoch(self, epoch: int, start: int | None = None, until: int | None = None) -> None:
        """Read epoch `epoch` next, from per-rank sample offset `start`; with `until`, the same pass
        goes on through epochs epoch+1 ... until-1 (module docstring, 6).

        ``start=None`` keeps the ``start`` given to ``open_store`` for the first
        epoch set (the resumed one) and means 0 after that. Also reaches
        DataLoader workers that persist across epochs (``persistent_workers=True``):
        they hold a copy of this dataset made when they started, and read epoch,
        start and until from memory shared with it.
        """
        if start is None:
            start, self._resume_start = self._resume_start, 0
        else:
            self._resume_start = 0
        until = epoch + 1 if until is None else until
        if until <= epoch:
            raise ConfigError(f"until={until} must be after epoch {epoch}")
        if until > epoch + 1 and self.options.max_skips:
            raise ConfigError("one pass through several epochs needs strict reads (max_skips=0): a lenient "
                              "epoch may yield fewer items, and the epochs could not be told apart")
        self.epoch, self.start, self.until = epoch, start, until
        self._dist = rank_and_world()

    # epoch, start and until live in shared memory (_shared_position): a persistent worker's
    # copy of the dataset sees every set_epoch of the main process.
    @property
    def epoch(self) -> int:
        return int(self._position[0])

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._position[0] = value

    @property
    def start(self) -> int:
        return int(self._position[1])

    @start.setter
    def start(self, value: int) -> None:
        self._position[1] = value

    @property
    def until(self) -> int:
        return max(int(self._position[2]), self.epoch + 1)

    @until.setter
    def until(self, value: int) -> None:
        self._position[2] = value

    @property
    def current_variant(self) -> int:
        return self._variant(self.epoch)

    def _variant(self, epoch: int) -> int:
        return self.variant if self.variant is not None else epoch % self.info["variants"]

    def shards(self, epoch: int | None = None) -> list:
        """The shard records epoch `epoch` reads (None: the current epoch)."""
        variant = self._variant(self.epoch if epoch is None else epoch)
        return [s for s in self.info["shards"] if s["variant"] == variant]

    def _rank_world(self) -> tuple[int, int]:
        rank, world = self._dist if get_worker_info() else rank_and_world()
        o = self.options
        return (rank if o.rank is None else o.rank), (world if o.world is None else o.world)

    def samples_per_rank(self, epoch: int | None = None) -> int:
        """Samples this rank reads in epoch `epoch` (None: the current epoch), from its first."""
        rank, world = self._rank_world()
        return len(rank_slice(sum(s["samples"] for s in self.shards(epoch)), rank, world, self.options.remainder))

    def __len__(self) -> int:
        """Items this rank yields in a pass: samples, or batches with batch_size (the current epoch
        from its start, and the epochs up to `until` where set_epoch gave one)."""
        return sum(self.items(e, self.start if e == self.epoch else 0) for e in range(self.epoch, self.until))

    def items(self, epoch: int, start: int = 0) -> int:
        """Items this rank yields in epoch `epoch` from per-rank sample offset `start`."""
        n = max(self.samples_per_rank(epoch) - start, 0)
        batch_size = self.options.batch_size
        if batch_size is None:
            return n
        return n // batch_size if self.options.drop_last else -(-n // batch_size)

    def order(self) -> list[tuple]:
        """The epoch's global order G as (shard path, sample index) pairs."""
        shards = self.shards()
        return [(shards[s]["path"], i) for s, i in self._order(shards, self.epoch).samples]

    def _order(self, shards, epoch: int) -> EpochOrder:
        o = self.options
        return epoch_order([s["samples"] for s in shards], o.seed, epoch, o.shuffle, o.shuffle_window)

    def _units(self, order: EpochOrder, start: int) -> list[list[tuple]]:
        """This rank's items of the epoch from `start` on, each a list of (shard, index) pairs."""
        mine = rank_share(order.samples, *self._rank_world(), self.options.remainder)[start:]
        return batch_units(mine, self.options.batch_size, self.options.drop_last)

    # ------------------------------------------------------------------ the stages

    def __iter__(self):
        worker = get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker else (0, 1)
        plan = (self.epoch, self.start, self.until)
        make = partial(self._pass, wid=wid, nworkers=nworkers)
        if worker is None or self.remote:  # ahead.py: which readers begin the next pass early, and why
            yield from make(plan)
            return
        # A DataLoader worker of a local store: the pass that usually follows is begun once this one is read out.
        self._ahead = self._ahead or Ahead()
        yield from self._ahead.take(plan, make)
        self._ahead.start(following(plan), make)

    def _pass(self, plan: tuple, wid: int, nworkers: int):
        """This worker's items of pass `plan` = (epoch, start, until)."""
        shares = self._shares(plan, wid, nworkers)
        # A remote store's reader prefetches into the next epochs: their shares are computed that far ahead.
        upcoming = deque(islice(shares, 1 + (PREFETCH_WINDOWS if self.remote else 0)))
        try:
            while upcoming:
                shards, order, units = upcoming.popleft()
                upcoming.extend(islice(shares, 1))
                prefetch = self._prefetcher(shards, order, units, upcoming) if self.remote else None
                yield from self._read(shards, order, units, prefetch)
        finally:
            if self.remote:  # no fetch left running or queued (a worker may exit next), no file pinned
                self.remote.end_pass()

    def _shares(self, plan: tuple, wid: int, nworkers: int):
        """(shards, order, this worker's units) of each epoch of pass `plan`: item i of the pass goes to
        worker i mod nworkers."""
        first, start, until = plan
        before = 0  # items of this pass before `epoch`
        for epoch in range(first, until):
            shards = self.shards(epoch)
            order = self._order(shards, epoch)
            units = self._units(order, start if epoch == first else 0)
            yield shards, order, worker_share(units, wid, nworkers, before)
            before += len(units)

    def _read(self, shards: list, order: EpochOrder, units: list, prefetch):
        """The items of `units` (this worker's share of one epoch) through the reader's stages."""
        o = self.options
        self.skipped = []  # max_skips is a budget per epoch: a damaged epoch does not fail the clean ones
        read = partial(self._read_shard, shards)
        events = stages.read_units(units, shards, order.window_of(), read, prefetch)
        events = stages.decode(events, partial(stages.as_dict, teacher=self.teacher, y_hat_dtype=o.y_hat_dtype))
        counted = stages.count_skips(events, o.max_skips, self.skipped)
        rank, world = self._rank_world()
        padded = stages.pad_for_lockstep(counted, world > 1, rank, self.skipped)
        return stages.to_items(padded, o.batch_size is not None, o.max_skips > 0)

    def _read_shard(self, shards: list, s: int, order: list):
        shard = shards[s]
        with self._held(shard):  # until read out (or abandoned): then the cache may evict it
            checked = self.remote is not None and self.remote.checked_on_arrival(shard, self._arrays)
            records = read_samples(self.path, self.backend, shard, self.teacher.read_fields(self.fields),
                                   self.options.max_skips > 0, order=order, checked_whole=checked)
            yield from self.remote.named(records, shard) if self.remote else records

    def _held(self, shard: dict):
        """A remote store's shard fetched and pinned in the local mirror while it is read, its errors naming its
        URL; nothing locally."""
        return self.remote.held(shard, self._arrays) if self.remote else contextlib.nullcontext()

    def _prefetcher(self, shards: list, order: EpochOrder, units: list, upcoming):
        """before_window for a remote store: fetch the shards this worker reads of the window and of its
        next PREFETCH_WINDOWS windows (on into the first windows of the `upcoming` epochs' shares, in a pass
        through several epochs), PREFETCH_THREADS at a time: a window's first unit has samples of all its
        shards, and those already fetched ahead cost a stat each."""
        windows = _windows_read(shards, order, units)
        to_fetch = [*windows.values(), *(next(iter(_windows_read(*share).values()), []) for share in upcoming)]
        next_window = {w: [shard for nxt in to_fetch[i:i + 1 + PREFETCH_WINDOWS] for shard in nxt]
                       for i, w in enumerate(windows)}
        return lambda window: self.remote.prefetch(next_window.get(tuple(window), []), self._arrays)


def _windows_read(shards: list, order: EpochOrder, units: list) -> dict:
    """{window: the records of its shards that `units` read}, windows in the order the units reach them."""
    window_of = order.window_of()
    mine = {s for unit in units for s, _ in unit}
    windows = dict.fromkeys(tuple(window_of[s]) for unit in units for s, _ in unit)
    return {w: [shards[s] for s in w if s in mine] for w in windows}


def _shared_position() -> torch.Tensor:
    """[epoch, start, until] in shared memory: forked and spawned DataLoader workers alike get
    the same storage (torch pickles a shared tensor as a handle to it), not a copy."""
    return torch.zeros(3, dtype=torch.int64).share_memory_()


def open_store(path, split: str | None = None, **options) -> LatentDataset:
    """Open one split of a store for reading, as a torch IterableDataset of sample dicts.

    Args:
        path: the store folder (it holds manifest.json), or its URL: any protocol fsspec reads
            (``s3://bucket/prefix``, ``gs://``, ``az://``, ``https://``, ``hf://``).
        split: the split to read; None if the store holds only one.
        options: keyword arguments, the fields of `ReadOptions` (listed below).

    Each sample is a dict of tensors plus ``__key__`` and ``__shard__``. ŷ is padded to a
    multiple of 64 pixels: ``ds.info["valid_region"]`` (rows r0:r1, cols c0:c1) are the latent
    cells of the image, e.g. ``y = s["y_hat"][..., r0:r1, c0:c1]``. ``ds.keys()`` lists the
    sample keys; ``ds[key]`` or ``ds[i]`` reads one sample.
    """
    return LatentDataset(path, split, ReadOptions(**options))


# One list of options: open_store shows ReadOptions' fields as its keyword-only parameters and documents them.
open_store.__signature__ = inspect.Signature(
    [inspect.Parameter("path", inspect.Parameter.POSITIONAL_OR_KEYWORD),
     inspect.Parameter("split", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation="str | None"),
     *option_parameters()], return_annotation="LatentDataset")
open_store.__doc__ += "\n    " + ReadOptions.__doc__.strip() + "\n"
