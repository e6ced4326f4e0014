"""The child process that executes one run. A crash, an OOM kill or a GPU fault here never reaches the worker,
and all the memory the run took (GPU memory included) goes back to the system when this process exits."""

from __future__ import annotations

import importlib
import signal
import sys
import traceback

from db import queue
from db.models import RunStatus
from db.session import Store


class UserError(Exception):
    """A problem the user can fix (bad data, missing file): reported as one line, no traceback."""


def _user_facing(exc: BaseException) -> bool:
    from engine.config import ConfigError

    if isinstance(exc, (UserError, ConfigError, FileNotFoundError)):
        return True
    try:
        from engine.data.types import DataValidationError
    except ImportError:
        return False
    return isinstance(exc, DataValidationError)


def main(run_id: int, db_url: str, worker_id: str) -> int:
    from engine.config import parse_config
    from engine.runs import RUNNERS
    from engine.runs.context import RunContext

    store = Store(db_url, migrate=False)
    run = queue.get_run(store, run_id)
    ctx: RunContext | None = None
    try:
        config = parse_config(run.config_json)
        ctx = RunContext(store, run_id, config, resume=run.resume, worker_id=worker_id)
        # Graceful stop: the current step finishes, a checkpoint is written, and the run goes back in the queue.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: ctx.request_shutdown())
        if run.resume:
            ckpt = ctx.resume_checkpoint_path
            ctx.event(f"resuming from checkpoint {ckpt}" if ckpt else "resuming without a checkpoint: from step 0")
        runner = importlib.import_module(RUNNERS[config.algorithm])
        runner.execute(ctx)
    except BaseException as exc:  # noqa: BLE001 - everything ends the run; the worker must hear of it
        if _user_facing(exc):
            queue.finish_run(store, run_id, RunStatus.failed, error=str(exc))
        else:
            tb = traceback.format_exc()
            queue.finish_run(store, run_id, RunStatus.failed, error=f"{type(exc).__name__}: {exc}",
                             message=f"run failed:\n{tb}")
        return 1
    if ctx.stop_reason == "cancel":
        queue.finish_run(store, run_id, RunStatus.cancelled, message="cancelled at a step boundary")
    elif ctx.stop_reason == "shutdown":
        queue.finish_run(store, run_id, RunStatus.queued, requeue=True,
                         message="engine shut down: run re-queued; it resumes from its last checkpoint")
    else:
        queue.finish_run(store, run_id, RunStatus.completed, message="completed")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
