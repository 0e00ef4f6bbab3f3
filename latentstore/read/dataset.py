"""Reading a store as a torch IterableDataset: an epoch order that depends on (seed, epoch) only.

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

Backends: ``readers.read_dicts`` yields the samples of one shard record
(``info["shards"][i]``) in stored order, for either backend, as dicts of
decoded arrays; the dataset hands them out as dicts of tensors. Strict reads raise StoreError naming shard and
key; with ``max_skips > 0`` damaged samples are skipped, listed in
``dataset.skipped`` and in the ``__skipped__`` entry of the next item, and the
read fails once more than ``max_skips`` were skipped.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import IterableDataset, default_collate, get_worker_info

from ..errors import ConfigError, StoreError
from ..store.format import FIELDS, read_manifest
from ..store.keys import SplitKeys, check_fields, read_tar_sample
from ..store.location import local_root
from ..store.readers import BACKENDS, read_dicts
from ..teacher.decode import TeacherDecoder
from .ranks import rank_and_world

DEFAULT_FIELDS = ("y_hat", "label")
REMAINDERS = ("drop", "pad", "keep")
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


def to_tensors(sample: dict, y_hat_dtype: torch.dtype | None = torch.float32) -> dict:
    """numpy fields -> tensors (ŷ in `y_hat_dtype`, None: as stored; integer symbols widened to int32)."""
    out = {}
    for name, value in sample.items():
        if isinstance(value, np.ndarray):
            t = torch.from_numpy(value)
            if name == "y_hat":
                t = t if y_hat_dtype is None else t.to(y_hat_dtype)
            elif not t.is_floating_point():
                t = t.to(torch.int32)
            out[name] = t
        elif name == "label":
            out[name] = torch.tensor(value, dtype=torch.int64)
        else:
            out[name] = value
    return out


def collate(samples: list[dict]) -> dict:
    """Stack tensors of equal shape; keep everything else (keys, meta dicts) as lists."""
    out = {}
    for name in samples[0]:
        values = [s[name] for s in samples]
        out[name] = stack(values) if isinstance(values[0], torch.Tensor) else values
    return out


#: Below this many elements a batch is stacked by torch.stack (labels, scalars): no thread pool at that size.
_COPY_FROM = 1 << 16


def stack(values: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack of equal-shaped tensors, written sample by sample into one preallocated batch.

    torch.stack of a large float16 batch runs on torch's thread pool and costs ~15x a plain copy per
    sample when the cores are shared (a 0-worker loader in the trainer's process). In a DataLoader
    worker the batch is allocated in shared memory, as default_collate does, so handing it to the
    main process costs no second copy."""
    first = values[0]
    if first.numel() * len(values) < _COPY_FROM or any(v.shape != first.shape or v.dtype != first.dtype
                                                       for v in values):
        return default_collate(values)  # small, or unequal shapes: torch's own error names them
    shape = (len(values), *first.shape)
    if get_worker_info() is not None:
        storage = first._typed_storage()._new_shared(math.prod(shape), device=first.device)
        batch = first.new(storage).view(shape)
    else:
        batch = torch.empty(shape, dtype=first.dtype)
    for row, value in zip(batch, values):
        row.copy_(value)
    return batch


# --------------------------------------------------------------------------- order

def epoch_order(counts: list[int], seed: int, epoch: int, shuffle: bool, window: int) -> list[tuple]:
    """The epoch's global order: (shard index, sample index) pairs, a function of its arguments only."""
    if not shuffle:
        return [(s, i) for s, n in enumerate(counts) for i in range(n)]
    rng = np.random.default_rng([seed, epoch])
    shards = [int(s) for s in rng.permutation(len(counts))]
    order = []
    for w in range(0, len(shards), window):
        pool = [(s, i) for s in shards[w:w + window] for i in range(counts[s])]
        order.extend(pool[int(j)] for j in rng.permutation(len(pool)))
    return order


def rank_slice(total: int, rank: int, world: int, remainder: str) -> range:
    """Positions in G of rank `rank`'s samples (positions >= total wrap to the start of G)."""
    if remainder not in REMAINDERS:
        raise ConfigError(f"Invalid remainder {remainder!r}: choose {', '.join(REMAINDERS)}")
    if remainder == "keep":
        return range(rank * total // world, (rank + 1) * total // world)
    per_rank = total // world if remainder == "drop" else -(-total // world)
    if per_rank == 0:
        raise ConfigError(f"{total} samples cannot be split over {world} ranks with remainder='drop': "
                          "use remainder='pad' or fewer ranks")
    return range(rank * per_rank, (rank + 1) * per_rank)


class LatentDataset(IterableDataset):
    """The samples of one split, streamed from its shards with strict checks.

    variant: None (default) reads variant ``epoch % K`` (call set_epoch); an int
    pins one. seed/shuffle/shuffle_window: the epoch order (module docstring).
    batch_size/drop_last: yield collated batches (use ``DataLoader(ds,
    batch_size=None)``). remainder: "drop" or "pad" to give every rank the same
    count, "keep" to read every sample exactly once. start: per-rank sample offset to resume from. rank/world: override
    torch.distributed / RANK, WORLD_SIZE (read when the dataset is made and at
    every set_epoch: DataLoader workers cannot see the process group). max_skips: 0 = strict.
    """

    def __init__(self, path, split: str | None = None, variant: int | None = None,
                 fields=DEFAULT_FIELDS, y_hat_dtype: torch.dtype | None = torch.float32, *,
                 seed: int = 0, shuffle: bool = False, shuffle_window: int = 4,
                 batch_size: int | None = None, drop_last: bool = False, remainder: str = "drop",
                 start: int = 0, rank: int | None = None, world: int | None = None, max_skips: int = 0,
                 teacher_dtype: torch.dtype | None = torch.float32, storage_options: dict | None = None,
                 cache_dir=None):
        # A store at a URL is read through a local mirror, each shard fetched whole on first use.
        self.path, self.remote = local_root(path, storage_options, cache_dir)
        self.manifest = read_manifest(self.path)
        self.split = pick_split(self.manifest, split, self.path)
        self.info = self.manifest["splits"][self.split]
        self.backend = self.manifest.get("backend", "webdataset")
        if self.backend not in BACKENDS:
            raise StoreError(f"{self.path} uses backend {self.backend!r}; this latentstore reads "
                             f"{', '.join(BACKENDS)}")
        fields = check_fields(fields, self.info, self.path, self.split)
        self.teacher = TeacherDecoder(self.info, fields, teacher_dtype)  # teacher_s8 ... -> float tensors
        unknown = set(fields) - set(FIELDS) - self.teacher.fields
        if unknown:
            raise ConfigError(f"Unknown fields {sorted(unknown)}: choose from "
                              f"{', '.join([*FIELDS, *sorted(self.teacher.fields)])}")
        if variant is not None and not 0 <= variant < self.info["variants"]:
            raise ConfigError(f"variant {variant} out of range: {self.path} stores {self.info['variants']}")
        for name, value, low in (("shuffle_window", shuffle_window, 1), ("batch_size", 1 if batch_size is None else batch_size, 1),
                                 ("start", start, 0), ("max_skips", max_skips, 0)):
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}")
        if remainder not in REMAINDERS:
            raise ConfigError(f"Invalid remainder {remainder!r}: choose {', '.join(REMAINDERS)}")
        self.fields, self.variant, self.y_hat_dtype = tuple(fields), variant, y_hat_dtype
        self.seed, self.shuffle, self.shuffle_window = seed, shuffle, shuffle_window
        self.batch_size, self.drop_last, self.remainder = batch_size, drop_last, remainder
        self._position = _shared_position()
        self.start, self.rank, self.world, self.max_skips = start, rank, world, max_skips
        self._resume_start = start  # consumed by the first set_epoch without a start
        self.epoch = 0
        self.skipped: list[str] = []
        self._keys: SplitKeys | None = None      # random access: built on first use
        self._zarr_keys = None
        # DataLoader workers do not see the process group: resolve it here, in the main process.
        self._dist = rank_and_world()

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
        if self.remote:
            self.remote.fetch_shard(shard)
        fields = self.teacher.read_fields(self.fields)
        if self.backend == "zarr":
            from ..store.zarr.reader import KeyIndex
            if self._zarr_keys is None:
                self._zarr_keys = KeyIndex(self.path, self.manifest, self.split)
            sample = self._zarr_keys.get(key, fields)
        else:
            sample = read_tar_sample(self.path, shard, index, key, fields)
        return to_tensors(self.teacher.decode(sample), self.y_hat_dtype)

    def _key_index(self) -> SplitKeys:
        if self._keys is None:
            self._keys = SplitKeys(self.path, self.manifest, self.split)
        return self._keys

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
        if until > epoch + 1 and self.max_skips:
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
        return (rank if self.rank is None else self.rank), (world if self.world is None else self.world)

    def samples_per_rank(self, epoch: int | None = None) -> int:
        """Samples this rank reads in epoch `epoch` (None: the current epoch), from its first."""
        rank, world = self._rank_world()
        return len(rank_slice(sum(s["samples"] for s in self.shards(epoch)), rank, world, self.remainder))

    def __len__(self) -> int:
        """Items this rank yields in a pass: samples, or batches with batch_size (the current epoch
        from its start, and the epochs up to `until` where set_epoch gave one)."""
        return sum(self.items(e, self.start if e == self.epoch else 0) for e in range(self.epoch, self.until))

    def items(self, epoch: int, start: int = 0) -> int:
        """Items this rank yields in epoch `epoch` from per-rank sample offset `start`."""
        n = max(self.samples_per_rank(epoch) - start, 0)
        if self.batch_size is None:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self) -> list[tuple]:
        """The epoch's global order G as (shard path, sample index) pairs."""
        shards = self.shards()
        return [(shards[s]["path"], i) for s, i in self._order(shards, self.epoch)]

    def _order(self, shards, epoch: int) -> list[tuple]:
        return epoch_order([s["samples"] for s in shards], self.seed, epoch, self.shuffle, self.shuffle_window)

    def _units(self, shards, epoch: int, start: int) -> list[list[tuple]]:
        """This rank's items of `epoch` from `start` on, each a list of (shard, index) pairs."""
        order = self._order(shards, epoch)
        rank, world = self._rank_world()
        mine = [order[p % len(order)] for p in rank_slice(len(order), rank, world, self.remainder)]
        mine = mine[start:]
        if self.batch_size is None:
            return [[pair] for pair in mine]
        b = self.batch_size
        units = [mine[i:i + b] for i in range(0, len(mine), b)]
        if self.drop_last and units and len(units[-1]) < b:
            units.pop()
        return units

    def __iter__(self):
        worker = get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker else (0, 1)
        first, start = self.epoch, self.start
        before = 0  # items of this pass before `epoch`: item i of the pass goes to worker i mod nworkers
        for epoch in range(first, self.until):
            shards = self.shards(epoch)
            units = self._units(shards, epoch, start if epoch == first else 0)
            yield from self._read(shards, epoch, units[(wid - before) % nworkers::nworkers])
            before += len(units)

    def _read(self, shards, epoch: int, units: list):
        """The items of `units` (this worker's share of one epoch), read window by window."""
        self.skipped = []  # max_skips is a budget per epoch: a damaged epoch does not fail the clean ones
        window_of = self._windows(shards, epoch)
        uses: dict[tuple, int] = {}
        mine: dict[int, set] = {}  # shard index -> this worker's sample indices in it
        for unit in units:
            for pair in unit:
                uses[pair] = uses.get(pair, 0) + 1
                mine.setdefault(pair[0], set()).add(pair[1])
        cache: dict[tuple, dict | None] = {}
        pending: list[str] = []
        if self.remote:  # the next PREFETCH_WINDOWS windows' shards are fetched while one window is read
            windows = list(dict.fromkeys(tuple(window_of[s]) for unit in units for s, _ in unit))
            ahead = [[shards[s] for s in w] for w in windows[1:]]
            # a pass through several epochs goes on into the next epochs' first windows
            ahead += [self._first_window(e) for e in range(epoch + 1, min(epoch + 1 + PREFETCH_WINDOWS, self.until))]
            self._next_window = {w: [shard for nxt in ahead[i:i + PREFETCH_WINDOWS] for shard in nxt]
                                 for i, w in enumerate(windows)}
        # Under DDP (world > 1) every unit yields an item, so each rank yields len(self) of them
        # and the ranks' steps stay in lockstep: a unit whose samples were all skipped repeats
        # the last item read (or the first one, where none was read yet). A single process
        # yields only what it read (N - k samples, the k named).
        lockstep = self._rank_world()[1] > 1
        last, owed = None, 0
        for unit in units:
            batch = []
            for pair in unit:
                if pair not in cache:
                    pending += self._load(shards, window_of[pair[0]], mine, uses, cache)
                sample = cache[pair]
                uses[pair] -= 1
                if uses[pair] == 0:
                    del cache[pair]
                if sample is not None:
                    batch.append(sample)
            if batch:
                last = batch[0] if self.batch_size is None else collate(batch)
            elif not lockstep:
                continue
            elif last is None:
                owed += 1
                continue
            item = last
            if self.max_skips:
                item = dict(item, __skipped__="\n".join(pending) if self.batch_size is None else pending)
                pending = []
            for _ in range(owed + 1):
                yield item
            owed = 0
        if owed:
            raise StoreError(f"Every sample of {owed} item(s) of rank {self._rank_world()[0]} was damaged and "
                             f"skipped, so this rank cannot yield as many items as the others:\n  "
                             + "\n  ".join(self.skipped[:20]) + "\nRun `latentstore verify` and rebuild the "
                             "damaged shards.")

    def _first_window(self, epoch: int) -> list[dict]:
        """The shard records of the window this rank's slice of `epoch` starts in (what to prefetch)."""
        shards = self.shards(epoch)
        order = self._order(shards, epoch)
        positions = rank_slice(len(order), *self._rank_world(), self.remainder)
        if not order or not positions:
            return []
        return [shards[s] for s in self._windows(shards, epoch)[order[positions[0] % len(order)][0]]]

    def _windows(self, shards, epoch: int) -> dict[int, list[int]]:
        """Shard index -> the shards read together with it (its shuffle window)."""
        if not self.shuffle:
            return {s: [s] for s in range(len(shards))}
        rng = np.random.default_rng([self.seed, epoch])
        perm = [int(s) for s in rng.permutation(len(shards))]  # same first draw as epoch_order
        groups = [perm[w:w + self.shuffle_window] for w in range(0, len(perm), self.shuffle_window)]
        return {s: g for g in groups for s in g}

    def _load(self, shards, window: list[int], mine: dict, uses: dict, cache: dict) -> list[str]:
        """Read the shards of one window into `cache` (only samples still to be used); return skips.
        Only this worker's samples (`mine`) are decoded: the rest are other workers' work."""
        skipped = []
        if self.remote:
            self.remote.prefetch(self._next_window.get(tuple(window), []))
        for s in window:
            shard = shards[s]
            if self.remote:
                self.remote.fetch_shard(shard)
            seen, damage = 0, "the shard holds fewer samples than the manifest records"
            samples = read_dicts(self.path, self.backend, shard, self.teacher.read_fields(self.fields),
                                 self.max_skips > 0, wanted=mine.get(s, ()))
            for index, sample in enumerate(samples):
                seen = index + 1
                if sample is None:
                    continue
                if "__error__" in sample:
                    if sample["__key__"] is None:  # damage to the shard itself: none of its samples is kept
                        seen, damage = 0, sample["__error__"]
                        break
                    if uses.get((s, index)):
                        skipped.append(sample["__error__"])
                        cache[(s, index)] = None
                    continue
                if uses.get((s, index)):
                    cache[(s, index)] = to_tensors(self.teacher.decode(sample), self.y_hat_dtype)
            for index in range(seen, shard["samples"]):
                if uses.get((s, index)) and not ((s, index) in cache and cache[(s, index)] is None):
                    known = cache.get((s, index))  # read before the shard's damage showed: not trusted
                    key = f"key {known['__key__']}" if known else "key unknown"
                    skipped.append(f"shard {shard['path']}, sample #{index} ({key}): lost ({damage})")
                    cache[(s, index)] = None
        self.skipped += skipped
        if len(self.skipped) > self.max_skips:
            listing = "\n  ".join(self.skipped[:20])
            raise StoreError(f"{len(self.skipped)} damaged samples, more than max_skips={self.max_skips}:\n  "
                             f"{listing}\nRun `latentstore verify` and rebuild the damaged shards.")
        return skipped


def _shared_position() -> torch.Tensor:
    """[epoch, start, until] in shared memory: forked and spawned DataLoader workers alike get
    the same storage (torch pickles a shared tensor as a handle to it), not a copy."""
    return torch.zeros(3, dtype=torch.int64).share_memory_()


def open_store(path, split: str | None = None, *, fields=DEFAULT_FIELDS, variant: int | None = None,
               y_hat_dtype: torch.dtype | None = torch.float32, teacher_dtype: torch.dtype | None = torch.float32,
               seed: int = 0, shuffle: bool = False, shuffle_window: int = 4,
               batch_size: int | None = None, drop_last: bool = False, remainder: str = "drop",
               start: int = 0, rank: int | None = None, world: int | None = None,
               max_skips: int = 0, storage_options: dict | None = None, cache_dir=None) -> LatentDataset:
    """Open one split of a store for reading, as a torch IterableDataset of sample dicts.

    Args:
        path: the store folder (it holds manifest.json), or its URL: any protocol fsspec reads
            (``s3://bucket/prefix``, ``gs://``, ``az://``, ``https://``, ``hf://``).
        split: the split to read; None if the store holds only one.
        fields: the fields each sample carries, a tuple of names or one name: y_hat, symbols,
            y_string, z_string, label, meta, and what the store was built with (means, scales,
            z_symbols, label_map, teacher_<tap>). A field the split does not hold is an error.
        variant: None reads variant ``epoch % K`` (call ``set_epoch``); an int pins one.
        y_hat_dtype / teacher_dtype: dtype of ŷ and of the teacher maps in the samples. None: as
            stored (int8 teacher maps dequantized to float32), the fewest bytes per batch for a
            loader that widens on the GPU (the trainers and evals do).
        seed, shuffle, shuffle_window: the epoch order, a function of (seed, epoch) only; shards
            are shuffled, then the samples of each window of ``shuffle_window`` shards.
        batch_size, drop_last: yield collated batches (use ``DataLoader(ds, batch_size=None)``).
        remainder: "drop" or "pad", so that every rank reads the same number of samples; "keep" reads
            every sample exactly once (ranks may differ by one sample: evaluation).
        start: per-rank sample offset to resume an epoch from.
        rank, world: override torch.distributed (or RANK / WORLD_SIZE).
        max_skips: 0 (default) fails on the first damaged sample; N > 0 skips up to N, named.
        storage_options: passed to fsspec for a URL (e.g. ``{"endpoint_url": ..., "anon": True}``).
        cache_dir: where a remote store's shards are mirrored (default ``$LATENTSTORE_CACHE``, else
            ``~/.cache/latentstore/stores``); see latentstore/store/location.py.

    Each sample is a dict of tensors plus ``__key__`` and ``__shard__``. ŷ is padded to a
    multiple of 64 pixels: ``ds.info["valid_region"]`` (rows r0:r1, cols c0:c1) are the latent
    cells of the image, e.g. ``y = s["y_hat"][..., r0:r1, c0:c1]``. ``ds.keys()`` lists the
    sample keys; ``ds[key]`` or ``ds[i]`` reads one sample.
    """
    return LatentDataset(path, split, variant, fields, y_hat_dtype, seed=seed, shuffle=shuffle,
                         shuffle_window=shuffle_window, batch_size=batch_size, drop_last=drop_last,
                         remainder=remainder, start=start, rank=rank, world=world, max_skips=max_skips,
                         teacher_dtype=teacher_dtype, storage_options=storage_options, cache_dir=cache_dir)
