"""The end of a `testtime` process: exit handlers run, then the process ends without the interpreter's teardown.

Tearing down torch's and transformers' modules takes 1-1.5 s after every command, whatever it did (1.1 s after a
solve on the 2-core CPU, 1.5 s on an H200: results/h200-latency-2026-12-05.md), a tenth of a cold `testtime solve`
on a GPU. By the time a command returns its files are closed; what still has to happen at exit (logging's flush,
temporary folders' removal, multiprocessing's children) is registered with `atexit`, so those handlers run first.
Under torch.distributed the ordinary exit stays: a process group is torn down by its own handlers.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable


def exit_code(e: SystemExit) -> int:
    """The status `sys.exit(e.code)` would end with: 0 for None, 1 (after printing it) for a message."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def run_and_exit(main: Callable[[], object]) -> None:
    """Run `main` (a command line's entry point), then end the process with its status, skipping the teardown.
    Errors other than SystemExit propagate as they would without this."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = exit_code(e)
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        sys.exit(code)
    # What a normal exit does before its teardown: wait for the threads that are not daemons, run the handlers.
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be written to it anyway
            pass
    os._exit(code)
