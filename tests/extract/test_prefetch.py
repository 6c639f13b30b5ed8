"""The decode prefetch: ordered results, bounded look-ahead, errors in place, one torch thread per helper."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from extract.prefetch import keep_threads, prefetch


class Tracker:
    """Jobs that record how many of them have started but not yet been consumed."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.consumed = 0
        self.most_ahead = 0

    def job(self, i: int, seconds: float = 0.0):
        def run():
            with self.lock:
                self.started.append(i)
                self.most_ahead = max(self.most_ahead, len(self.started) - self.consumed)
            time.sleep(seconds)
            return i

        return run


def test_results_come_in_order_and_look_ahead_is_bounded():
    tracker = Tracker()
    jobs = [(tracker.job(i, seconds=0.02 * (i % 3 == 0)), 1) for i in range(20)]
    out = []
    for result in prefetch(jobs, threads=3, depth=4):
        time.sleep(0.005)
        out.append(result)
        tracker.consumed += 1
    assert out == list(range(20))
    assert 2 <= tracker.most_ahead <= 4 + 1  # at most depth waiting, plus the one being consumed


def test_cost_bound_holds_back_jobs_but_always_runs_one():
    """A job is started only while the jobs started and not yet handed out hold less than
    max_cost, or when there are none (so the 50 runs, alone)."""
    costs = [5, 5, 1, 1, 50, 1, 3, 3]
    pulled = [0]

    def jobs():
        for i, cost in enumerate(costs):
            pulled[0] += 1
            yield (lambda i=i: i), cost

    seen = []
    for result in prefetch(jobs(), threads=3, depth=10, max_cost=6):
        seen.append((result, pulled[0]))
    # worked by hand from the rule: held 5, 10 | 5, 6 | 1, 2, 52 | 51 | 50 | 0, 1, 4, 7 | ...
    assert seen == [(0, 3), (1, 5), (2, 5), (3, 5), (4, 8), (5, 8), (6, 8), (7, 8)]


def test_a_failing_job_raises_where_its_result_is_due():
    def fail():
        raise ValueError("bad file")

    jobs = [(lambda: 0, 1), (lambda: 1, 1), (fail, 1), (lambda: 3, 1)]
    got = []
    with pytest.raises(ValueError, match="bad file"):
        for result in prefetch(jobs, threads=2):
            got.append(result)
    assert got == [0, 1]


def test_helpers_use_one_torch_thread_and_the_consumer_keeps_its_own():
    before = torch.get_num_threads()
    with keep_threads(2) as count:
        helper_counts = list(prefetch([(torch.get_num_threads, 0)] * 3, threads=2))
        assert torch.get_num_threads() == count == 2
    assert helper_counts == [1, 1, 1]
    torch.set_num_threads(before)
