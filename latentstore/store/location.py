"""Where a store lives: a local folder, or a URL any fsspec protocol reads (``s3://bucket/prefix``,
``gs://``, ``az://``, ``https://``, ``hf://``, ``memory://``), read and written through fsspec.

Transient errors (connection resets, timeouts, 5xx, throttling) are retried with exponential backoff,
at most ``ATTEMPTS`` times and ``RETRY_SECONDS`` in all; missing files and refused access fail at once
in one line naming the URL. URLs are shown without user info, query string or fragment, and error
texts are scrubbed the same way, so credentials never reach an error, a log or a checkpoint. A remote
store is read through a local mirror of it: latentstore/store/remote.py.
"""
from __future__ import annotations

import os
import re
import time
from urllib.parse import urlsplit, urlunsplit

import google_crc32c

from ..errors import ConfigError, StoreError

MANIFEST = "manifest.json"
#: pip extra that brings each protocol's fsspec backend
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http",
          "az": "azure", "abfs": "azure", "abfss": "azure", "hf": "hf"}
ATTEMPTS = 6
RETRY_SECONDS = 60.0
_SECRET = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s@]*@|(?P<query>\?[^\s'\"]*)", re.IGNORECASE)


def is_url(store) -> bool:
    """True for a store given as a URL of a remote protocol (``file://`` and plain paths are local)."""
    return isinstance(store, str) and "://" in store and not store.startswith("file://")


def shown(url: str) -> str:
    """The URL as errors and records show it: no user info, query string or fragment."""
    parts = urlsplit(url)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub(text: str, secrets=()) -> str:
    """`text` with user info and query strings of URLs removed, and each of `secrets` masked."""
    text = _SECRET.sub(lambda m: m.group("scheme") or "", text)
    for secret in secrets:
        if isinstance(secret, str) and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _secrets(options: dict) -> list[str]:
    """String values of storage options (keys, tokens, passwords), nested dicts included."""
    found = []
    for value in options.values():
        if isinstance(value, dict):
            found += _secrets(value)
        elif isinstance(value, str):
            found.append(value)
    return found


def filesystem(url: str, storage_options: dict | None = None):
    """(fsspec filesystem, its path for `url`); one line naming the pip extra when the protocol's package
    is missing."""
    protocol = urlsplit(url).scheme
    try:
        import fsspec
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except ImportError as exc:
        extra = EXTRAS.get(protocol)
        hint = f"pip install 'latentstore[{extra}]'" if extra else f"install the fsspec backend for {protocol}://"
        raise ConfigError(f"{shown(url)}: reading {protocol}:// stores needs a package that is not installed "
                          f"({scrub(str(exc))}); {hint}") from None
    except ValueError as exc:
        raise ConfigError(f"{shown(url)}: {scrub(str(exc))}") from None


def _permanent(exc: BaseException) -> str | None:
    """"not found", "refused" or "invalid" for an error that retrying cannot mend; None for a transient one."""
    text = f"{type(exc).__name__} {exc}"
    if isinstance(exc, FileNotFoundError) or re.search(r"\b404\b|NoSuchKey|NoSuchBucket|Not Found", text):
        return "not found"
    if isinstance(exc, PermissionError) or re.search(r"\b40[13]\b|Forbidden|AccessDenied|InvalidAccessKey", text):
        return "refused"
    if isinstance(exc, (ValueError, TypeError, IsADirectoryError, NotADirectoryError)) or "Validation" in text:
        return "invalid"
    return None


def check_bytes(data: bytes, record: dict | None) -> str | None:
    """Why `data` is not the file `record` describes (size, CRC-32C), or None."""
    if record is None:
        return None
    if len(data) != record["bytes"]:
        return f"{len(data)} bytes, the manifest records {record['bytes']}"
    if f"{google_crc32c.value(data):08x}" != record["crc32c"]:
        return "CRC-32C differs from the manifest's"
    return None


class Location:
    """A folder or URL read and written through fsspec, with retries on transient errors."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url, self.options = str(url).rstrip("/"), dict(storage_options or {})
        self.shown = shown(self.url) if is_url(self.url) else self.url
        parts = urlsplit(self.url)
        query = [v for pair in parts.query.split("&") for v in pair.split("=")[1:]]
        self.hidden = [*_secrets(self.options), *filter(None, (parts.username, parts.password)), *query]
        self._fs, self.root = filesystem(self.url, self.options)
        self._pid = os.getpid()

    @property
    def fs(self):
        """The fsspec filesystem of this process: async backends (s3fs, gcsfs) are not fork-safe, so a
        DataLoader worker makes its own (fsspec's instance cache starts empty in a new process)."""
        if self._pid != os.getpid():
            self._fs, self._pid = filesystem(self.url, self.options)[0], os.getpid()
        return self._fs

    def __getstate__(self):  # spawned workers make their own filesystem too
        return {**self.__dict__, "_fs": None, "_pid": None}

    def where(self, rel: str) -> str:
        return f"{self.shown}/{rel}"

    def _path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}"

    def read(self, rel: str, size: int | None = None) -> bytes:
        """The bytes of one file of the store. A file of known `size` (a manifest record's) is read in one
        ranged request; without one, some backends ask for the size first (s3fs: a HEAD, one more round
        trip to the object store)."""
        if size is None:
            return self._retry(rel, lambda: self.fs.cat_file(self._path(rel)))
        return self._retry(rel, lambda: self.fs.cat_file(self._path(rel), start=0, end=size))

    def write(self, rel: str, data: bytes) -> None:
        from fsspec.implementations.local import LocalFileSystem
        path = self._path(rel)
        if isinstance(self.fs, LocalFileSystem):  # a folder's subfolders are made first (object stores have none)
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self._retry(rel, lambda: self.fs.pipe_file(path, data))

    def exists(self, rel: str) -> bool:
        return self._retry(rel, lambda: self.fs.exists(self._path(rel)))

    def _retry(self, rel: str, action):
        """`action()`, retried with exponential backoff on transient errors; one line naming the URL on a
        permanent one, or once ATTEMPTS or RETRY_SECONDS are spent."""
        began, delay = time.monotonic(), 0.2
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return action()
            except Exception as exc:  # backends raise their own types: classify by kind and message
                why = scrub(f"{type(exc).__name__}: {exc}", self.hidden).replace("\n", " ")
                kind = _permanent(exc)
                if kind:
                    raise StoreError(f"{self.where(rel)}: {kind} ({why}); check the URL and your credentials"
                                     ) from None
                if attempt == ATTEMPTS or time.monotonic() - began + delay > RETRY_SECONDS:
                    raise StoreError(f"{self.where(rel)}: failed after {attempt} attempts in "
                                     f"{time.monotonic() - began:.0f} s ({why}); retry later") from None
                time.sleep(delay)
                delay *= 2

    def files(self) -> list[str]:
        """Every file under the location, relative to it (needs a protocol that lists folders)."""
        root = self.root.rstrip("/")
        found = self._retry("", lambda: self.fs.find(root))
        return sorted(p[len(root) + 1:] for p in found if p.startswith(root + "/"))
