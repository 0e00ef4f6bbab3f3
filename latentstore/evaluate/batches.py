"""The batches one rank evaluates: the trainers' reader, every sample of one variant exactly once."""
from __future__ import annotations

from torch.utils.data import DataLoader

from ..errors import StoreError
from ..read.dataset import LatentDataset, open_store
from ..store.keys import stored_fields


def eval_fields(info: dict, inputs: tuple, task: str) -> tuple:
    """The model's inputs plus what the metrics need: label (or label_map), meta and the bitstrings.

    The inputs must be stored (the reader names what is missing and how to build it); z_string
    exists only for coders with a hyperprior.
    """
    held = stored_fields(info)  # None: a split without samples, nothing to filter
    if task == "segmentation" and held is not None and "label_map" not in held:
        raise StoreError("the split has no label_map field; is this a segmentation store?")
    extra = ("label", "meta", "y_string", "z_string") + (("label_map",) if task == "segmentation" else ())
    return tuple(dict.fromkeys(inputs + tuple(f for f in extra if held is None or f in held)))


def eval_batches(store, split: str, variant: int, fields: tuple, batch_size: int, workers: int = 0,
                 rank: int = 0, world: int = 1, pin_memory: bool = False) -> tuple[LatentDataset, DataLoader]:
    """This rank's collated batches of variant ``variant`` (the dataset, and a DataLoader over it)."""
    data = open_store(store, split, fields=fields, variant=variant, batch_size=batch_size,
                      remainder="keep", rank=rank, world=world, y_hat_dtype=None)  # widened on the device
    return data, DataLoader(data, batch_size=None, num_workers=workers, pin_memory=pin_memory)


def with_progress(batches, data: LatentDataset, split: str, enabled: bool):
    """`batches`, with a bar counting this rank's samples (drawn only where `enabled`: rank 0)."""
    from tqdm import tqdm

    with tqdm(total=data.samples_per_rank(), unit="sample", desc=f"eval {split}", dynamic_ncols=True,
              disable=not enabled) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch["__key__"]))
