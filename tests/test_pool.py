"""The build's one process pool (latentstore/build/pool.py) as the image decoders use it."""
import time

from latentstore.build.pool import DECODERS, run_in_processes


def _setup(offset):
    return offset


def _job(offset, task, progress):
    progress.update(1)  # "started": counted in the parent
    return offset + task


def test_results_come_in_task_order_and_no_task_runs_further_ahead_than_asked():
    started = []
    results = run_in_processes(_job, _setup, (100,), list(range(12)), processes=2,
                               on_progress=started.append, ahead=3, role=DECODERS)
    first = next(results)
    time.sleep(1.0)  # time enough for idle processes to run all 12, were they handed them
    second = next(results)  # serves the pipes: every "started" sent so far arrives
    assert len(started) <= 2 + 3, "no task handed out more than `ahead` places beyond the next result"
    assert [first, second, *results] == [100 + i for i in range(12)]
