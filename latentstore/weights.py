"""Released weights as data: found in the local caches first, checked against their published hash,
read with ``weights_only=True``, and fetched only when the machine can reach the host.

Caches. CompressAI's zoo and timm's URL weights live in the torch hub cache
(``$TORCH_HOME/hub/checkpoints``); their file names carry the first hex digits
of the file's sha256 (``bmshj2018-hyperprior-1-7eb97409.pth.tar``), which is
what torch.hub's ``check_hash`` compares. timm's Hugging Face weights live in
the hub cache (``$HF_HOME/hub``), where a file is a blob named by its sha256.
A cached file is checked against that hash before it is read, so a file
copied between machines cannot smuggle in other weights, and the read itself
never runs code (``torch.load(weights_only=True)`` or safetensors).

Offline. A missing file on a machine that cannot reach the host, or where
``HF_HUB_OFFLINE=1`` (or ``LATENTSTORE_OFFLINE=1``) declares it offline, is a
WeightsError at once that names the cache paths and the options, instead of
a minute of download retries.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import urllib.parse
import urllib.request
from pathlib import Path

import torch

from .errors import WeightsError
from .store.format import file_sha256

OFFLINE_VARIABLES = ("LATENTSTORE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT = 3.0     # seconds to open a TCP connection to the weights' host (or proxy)
FETCH_TIMEOUT = 30.0    # socket timeout of a download, so a stalled network fails rather than hangs
# torch.hub's rule: the hash prefix is the part after the last "-" up to the first "." of the name.
_HASH_PREFIX = re.compile(r"-([a-f0-9]*)\.")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def torch_hub_file(url: str) -> Path:
    """Where torch.hub caches the file of `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urllib.parse.urlparse(url).path)


def hash_prefix(url: str) -> str | None:
    """The sha256 prefix a release URL's file name carries, as torch.hub reads it (None if none)."""
    match = _HASH_PREFIX.search(os.path.basename(urllib.parse.urlparse(url).path))
    return match.group(1) if match and match.group(1) else None


def check_file(path: Path, expected: str | None, what: str) -> str:
    """sha256 of `path`, refused unless it starts with `expected` (a prefix or a full digest)."""
    digest = file_sha256(path)
    if expected and not digest.startswith(expected):
        raise WeightsError(
            f"{path} is not the published file of {what}: its sha256 is {digest[:16]}…, the release says "
            f"{expected}…. It was altered or replaced; delete it (it is never loaded) and fetch it again, "
            f"or pass a checkpoint file you trust directly.")
    return digest


def offline_reason(url: str) -> str | None:
    """Why `url` cannot be fetched from here (declared offline, host unreachable), or None."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name}={os.environ[name]} is set"
    parts = urllib.parse.urlparse(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
    except OSError as exc:
        return f"{host}:{port} cannot be reached ({exc.__class__.__name__}: {exc})"
    return None


def fetch(url: str, what: str, advice: str) -> Path:
    """The cached file of `url`, hash-checked; downloaded (with its hash checked) when missing.

    `advice` ends the offline error: the options besides filling the cache.
    """
    cached = torch_hub_file(url)
    expected = hash_prefix(url)
    if cached.is_file():
        check_file(cached, expected, what)
        return cached
    reason = offline_reason(url)
    if reason:
        raise WeightsError(
            f"The weights of {what} are not in the local cache and cannot be fetched: {reason}.\n"
            f"Looked for: {cached} (the torch hub cache, $TORCH_HOME/hub/checkpoints). Either:\n"
            f"  - fetch on a machine with internet (wget -P {cached.parent} {url}) and copy the file there "
            f"(its sha256 must start with {expected}), or\n  - {advice}\n"
            f"Set HF_HUB_OFFLINE=1 on offline nodes: this check then skips the network probe.")
    cached.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(FETCH_TIMEOUT)
    try:  # download_url_to_file writes to a temporary name and checks hash_prefix before moving it in
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=expected, progress=True)
    except Exception as exc:  # network errors come in many types (URLError, OSError, RuntimeError on hash)
        raise WeightsError(f"Could not fetch the weights of {what} from {url} ({exc}); {advice}") from exc
    finally:
        socket.setdefaulttimeout(previous)
    return cached


def load_state(path: Path, what: str) -> dict:
    """A state dict read as data only: safetensors, or torch.load(weights_only=True) (no pickle code runs)."""
    try:
        if str(path).endswith(".safetensors"):
            import safetensors.torch

            return safetensors.torch.load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} does not load as plain weights ({what}): {str(exc)[:300]}. "
                           "Weights are read as data only (weights_only=True); re-save them as a state_dict "
                           "or .safetensors") from exc


# --------------------------------------------------------------------------- Hugging Face hub cache

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for, preferred first


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment as it is now (huggingface_hub reads it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hf_cached_file(repo_id: str) -> Path | None:
    """A cached weight file of hub repo `repo_id` (optionally "<repo>@<revision>"), its blob hash checked."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = repo_id.partition("@")
    for name in HF_WEIGHT_FILES:
        found = try_to_load_from_cache(repo, name, cache_dir=hf_cache_dir(), revision=revision or None)
        if isinstance(found, str) and Path(found).is_file():
            path = Path(found)
            blob = Path(os.path.realpath(path))
            # LFS blobs are named by their sha256: the cache's own record of what was downloaded. A snapshot
            # file that is no link to such a blob (a `cp -rL` copy) has no record to check it against.
            if not (path.is_symlink() and blob.parent.name == "blobs" and _SHA256.fullmatch(blob.name)):
                raise WeightsError(
                    f"{path} (Hugging Face repo {repo}) is not a link into the cache's blobs/ named by its sha256 "
                    "(a copy made with `cp -rL`?), so what it holds cannot be checked. Copy the cache with its "
                    "links (`cp -a`, `rsync -a`) or pass a weights file you trust directly")
            check_file(path, blob.name, f"Hugging Face repo {repo}")
            return path
    return None


def recipe_sha256(recipe: dict) -> str:
    """The identity of seeded ("untrained") weights: their recipe, not their tensors, whose last bits
    a seeded init computes through ATen's CPU-dispatched kernels."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def state_dict_sha256(state_dict) -> str:
    """A hash of the weights themselves (names, dtypes, shapes, bytes), independent of file format."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
