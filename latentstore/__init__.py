"""latentstore: exact learned-codec latents of image datasets, stored once, streamed to trainers."""
__version__ = "0.1.0"


def open_store(path, split=None, **kwargs):
    """A torch IterableDataset over one split of a store; see latentstore.store.LatentDataset."""
    from .store import open_store as _open_store

    return _open_store(path, split, **kwargs)


__all__ = ["open_store", "__version__"]
