"""`python -m testtime ...`: the `testtime` command itself (same app, exit codes and one-line errors).

This is what makes `torchrun --nproc-per-node N -m testtime evaluate ...` work.
"""

from testtime.cli import run

if __name__ == "__main__":
    run()
