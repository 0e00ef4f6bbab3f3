"""Errors a user can cause. Each message says what was wrong and what to do."""


class LatentstoreError(Exception):
    """Base class: anything the user can fix (bad argument, missing file, damaged store)."""


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
