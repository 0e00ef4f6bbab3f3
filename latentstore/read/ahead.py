"""A DataLoader worker's next pass, begun while the current one ends (issue 27: a pass's first batch).

A persistent worker that has read its share of a pass is idle until the next pass starts, and the
next pass then waits for its first item: the epoch's order, the first shard opened, a whole batch
read and decoded, at a worker's pace rather than the k workers' combined pace. So when a worker's
share of pass (epoch, start, until) is read out, `Ahead` starts the pass that usually follows,
(until, 0, until + (until - epoch)) (the next epoch, or the next run of as many epochs), in a thread
and reads its first item. The next pass takes that item if it is the pass predicted; any other
pass discards it and starts afresh. The items are the same either way: a pass is a function of
(epoch, start, until) and the dataset's options alone, never of when it was begun.

What a wrong guess costs: one item read per worker. Only the workers of a local store read ahead: a
worker of a DataLoader without persistent workers exits once its pass is read, and a remote fetch begun
then stalled that exit for a minute in tests/test_remote.py (s3fs in a process shutting down), holding the
shard's download lock against the next pass's workers meanwhile.
"""
from __future__ import annotations

import itertools
import threading
from typing import Callable, Iterator


def following(plan: tuple[int, int, int]) -> tuple[int, int, int]:
    """The pass that usually follows pass (epoch, start, until): as many epochs again, from the start."""
    epoch, _, until = plan
    return until, 0, until + (until - epoch)


class Ahead:
    """At most one pass begun ahead: its plan, its item stream and the first item (or the error) it gave."""

    def __init__(self):
        self._plan, self._items, self._thread = None, None, None
        self._first: tuple = ()

    def start(self, plan: tuple, make: Callable[[tuple], Iterator]) -> None:
        """Begin pass `plan` (``make(plan)`` gives its items) in a thread and read its first item."""
        self._plan = plan
        self._items = make(plan)
        self._thread = threading.Thread(target=self._read_first, name="latentstore-next-pass", daemon=True)
        self._thread.start()

    def _read_first(self) -> None:
        try:
            self._first = ("item", next(self._items))
        except StopIteration:
            self._first = ("end",)
        except BaseException as exc:  # raised where the pass is taken, as a fresh pass would raise it
            self._first = ("error", exc)

    def take(self, plan: tuple, make: Callable[[tuple], Iterator]) -> Iterator:
        """The items of pass `plan`: the pass begun ahead if it is that one, else a fresh one."""
        if self._thread is None:
            return make(plan)
        self._thread.join()
        items, first = self._items, self._first
        matches = plan == self._plan
        self.__init__()
        if not matches:
            items.close()  # a generator: its open shard is closed now
            return make(plan)
        if first[0] == "error":
            raise first[1]
        return itertools.chain([first[1]], items) if first[0] == "item" else iter(())
