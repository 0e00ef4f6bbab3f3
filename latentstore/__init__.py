"""latentstore: exact learned-codec latents of image datasets, stored once, streamed to trainers."""
import warnings
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# torch 2.14 deprecates torch.jit.script, which CompressAI calls at import time: not
# something a latentstore user can act on, so it is silenced here, and only it.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)


if TYPE_CHECKING:
    from .read.dataset import open_store


def __getattr__(name: str):
    # The reader imports torch: load it on first use, so that `import latentstore` (and the CLI) stay
    # light, while `latentstore.open_store` is the real function with its signature and docstring.
    if name == "open_store":
        from .read.dataset import open_store

        return open_store
    raise AttributeError(f"module 'latentstore' has no attribute {name!r}")


__all__ = ["open_store", "__version__"]
