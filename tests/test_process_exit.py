"""The end of a `testtime` process (`core.process_exit`): the interpreter's teardown is skipped, nothing else is.
Exit handlers run, piped output arrives whole, and the status is what `sys.exit` would have given."""

import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import atexit, sys, threading, time
    from testtime.core.process_exit import run_and_exit

    marker, how = sys.argv[1], sys.argv[2]
    atexit.register(lambda: open(marker, "a").write("handled"))

    def late_writer():  # a thread that is not a daemon still finishes its work, before the handlers
        time.sleep(0.5)
        open(marker, "a").write("thread;")

    def main():
        threading.Thread(target=late_writer).start()
        for i in range(20000):  # more than a pipe's buffer, still in Python's when main returns
            sys.stdout.write(f"line {i}\\n")
        if how == "code":
            sys.exit(3)
        if how == "message":
            sys.exit("error: a one-line message")
        if how == "raise":
            raise RuntimeError("not a SystemExit")

    run_and_exit(main)
    print("never reached")
""")


@pytest.mark.parametrize(("how", "code"), [("return", 0), ("code", 3), ("message", 1), ("raise", 1)])
def test_exit_keeps_handlers_output_and_status(tmp_path, how, code):
    marker = tmp_path / "marker"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(marker), how], capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 20000 and lines[-1] == "line 19999"
    assert "never reached" not in proc.stdout
    assert marker.read_text() == "thread;handled"  # the thread finished, then atexit ran, on every path
    if how == "message":
        assert proc.stderr.strip() == "error: a one-line message"
    if how == "raise":  # an unexpected error is not swallowed: the interpreter reports it as ever
        assert "RuntimeError: not a SystemExit" in proc.stderr


def test_the_command_ends_through_it(tmp_path, flip_task):
    from testtime.data.tasks import save_task

    path = tmp_path / "task.json"
    save_task(flip_task(0, "t0"), path)
    ok = subprocess.run([sys.executable, "-m", "testtime", "tasks", "list", str(path)], capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0 and "task" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "testtime", "tasks", "list", str(tmp_path / "missing.json")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error:"), bad.stderr
