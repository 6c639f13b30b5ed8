"""``python -m tests.reliability.kill_at_step ARGS``: ``python -m pipeline ARGS`` that SIGKILLs itself
right after its N-th optimizer step (``RVQ_TEST_KILL_AT_STEP=N``), as a kill -9 at that instant would.

A kill timed from outside (so many seconds after an epoch's history line) races the run: on a fast or
idle machine the run can finish first and the planned kill never fires. Counting optimizer steps in
the process itself (torch's global step hook) places a mid-epoch kill exactly, whatever the speed:
step N of a run with S steps per epoch falls in its epoch ``(N - 1) // S + 1``, after
``(N - 1) // S`` whole epochs (checkpoint and history line written), and the kill always fires when
the run has N steps left to take. Only the reliability tests use it (`helpers.run_pipeline`).
"""

from __future__ import annotations

import os
import runpy
import signal
import sys

from torch.optim.optimizer import register_optimizer_step_post_hook

ENV = "RVQ_TEST_KILL_AT_STEP"


def main() -> None:
    at = int(os.environ[ENV])
    steps = 0

    def hook(_optimizer, _args, _kwargs) -> None:
        nonlocal steps
        steps += 1
        if steps >= at:
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    register_optimizer_step_post_hook(hook)
    sys.argv = ["pipeline", *sys.argv[1:]]
    runpy.run_module("pipeline", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
