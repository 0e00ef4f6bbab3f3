"""A DataLoader worker's next pass, begun while the current one ends (issue 27: a pass's first batch).

A persistent worker that has read its share of a pass is idle until the next pass starts, and the
next pass then waits for its first item: the epoch's order, the first shard opened, a whole batch
read and decoded, at a worker's pace rather than the k workers' combined pace. So when a worker's
share of pass (epoch, start, until) is read out, `Ahead` starts the pass that usually follows,
(until, 0, until + (until - epoch)) (the next epoch, or the next run of as many epochs), in a thread
and reads its first item. The next pass takes that item if it is the pass predicted; any other
pass discards it and starts afresh. The items are the same either way: a pass is a function of
(epoch, start, until) and the dataset's options alone, never of when it was begun.

What a wrong guess costs: one item read per worker, and for a remote store the first shard of that
item fetched (fetches further ahead are held until the pass is taken: `Gate`).
"""
from __future__ import annotations

import itertools
import threading
from typing import Callable, Iterator


class Gate:
    """Runs actions at once when open; a closed gate keeps them until it is opened."""

    def __init__(self, is_open: bool = True):
        self.is_open, self._waiting = is_open, []

    def __call__(self, action: Callable[[], None]) -> None:
        if self.is_open:
            action()
        else:
            self._waiting.append(action)

    def open(self) -> None:
        self.is_open = True
        waiting, self._waiting = self._waiting, []
        for action in waiting:
            action()


def following(plan: tuple[int, int, int]) -> tuple[int, int, int]:
    """The pass that usually follows pass (epoch, start, until): as many epochs again, from the start."""
    epoch, _, until = plan
    return until, 0, until + (until - epoch)


class Ahead:
    """At most one pass begun ahead: its plan, its item stream and the first item (or the error) it gave."""

    def __init__(self):
        self._plan, self._items, self._gate, self._thread = None, None, None, None
        self._first: tuple = ()

    def start(self, plan: tuple, make: Callable[[tuple, Gate], Iterator]) -> None:
        """Begin pass `plan` (``make(plan, gate)`` gives its items) in a thread and read its first item."""
        self._plan, self._gate = plan, Gate(is_open=False)
        self._items = make(plan, self._gate)
        self._thread = threading.Thread(target=self._read_first, name="latentstore-next-pass", daemon=True)
        self._thread.start()

    def _read_first(self) -> None:
        try:
            self._first = ("item", next(self._items))
        except StopIteration:
            self._first = ("end",)
        except BaseException as exc:  # raised where the pass is taken, as a fresh pass would raise it
            self._first = ("error", exc)

    def take(self, plan: tuple, make: Callable[[tuple, Gate], Iterator]) -> Iterator:
        """The items of pass `plan`: the pass begun ahead if it is that one, else a fresh one."""
        if self._thread is None:
            return make(plan, Gate())
        self._thread.join()
        items, first, gate = self._items, self._first, self._gate
        matches = plan == self._plan
        self.__init__()
        if not matches:
            if hasattr(items, "close"):
                items.close()
            return make(plan, Gate())
        gate.open()
        if first[0] == "error":
            raise first[1]
        return itertools.chain([first[1]], items) if first[0] == "item" else iter(())
