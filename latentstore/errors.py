"""Errors a user can cause. Each message says what was wrong and what to do."""


class LatentstoreError(Exception):
    """Base class: anything the user can fix (bad argument, missing file, damaged store).

    A DataLoader worker's error reaches the main process re-made from torch's text,
    "Caught StoreError in DataLoader worker process 0. Original Traceback ...";
    such an error keeps only its own message, which already names the shard and key.
    """

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith("Caught ") \
                and "\nOriginal Traceback" in args[0]:
            args = (_worker_message(args[0], type(self)),)
        super().__init__(*args)


def _worker_message(text: str, cls: type) -> str:
    """The original message inside torch's worker-error text: what follows the traceback's last
    'module.Class: ' line (the whole text if it cannot be found)."""
    for prefix in (f"\n{cls.__module__}.{cls.__qualname__}: ", f"\n{cls.__qualname__}: "):
        at = text.rfind(prefix)
        if at >= 0:
            return text[at + len(prefix):].rstrip()
    return text


class ConfigError(LatentstoreError):
    """An invalid argument or a combination of arguments."""


class WeightsError(LatentstoreError):
    """Model weights could not be found, fetched or loaded."""


class InputError(LatentstoreError):
    """A dataset root, image or label file is missing or unusable."""


class StoreError(LatentstoreError):
    """A store is incomplete, damaged, or does not match what the caller expects.

    Messages name the shard (and the sample key where there is one).
    """


class BuildError(LatentstoreError):
    """A build stopped part-way for a reason outside its inputs (an encoder process killed, e.g. out of
    memory). Committed groups are kept: a rerun of the same command resumes."""
