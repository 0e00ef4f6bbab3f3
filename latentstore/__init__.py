"""latentstore: exact learned-codec latents of image datasets, stored once, streamed to trainers."""
import warnings

__version__ = "0.1.0"

# torch 2.14 deprecates torch.jit.script, which CompressAI calls at import time: not
# something a latentstore user can act on, so it is silenced here, and only it.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)


def open_store(path, split=None, **kwargs):
    """A torch IterableDataset over one split of a store; see latentstore.store.LatentDataset."""
    from .store import open_store as _open_store

    return _open_store(path, split, **kwargs)


__all__ = ["open_store", "__version__"]
