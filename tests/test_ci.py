"""README's test command is what CI runs, and it ends with pytest's closing "N passed" line (issue 26)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def readme_test_command() -> list[str]:
    """The command of README's "Run the tests" block, split as a shell would."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("Run the tests", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    (line,) = block.strip().splitlines()
    return shlex.split(line)


def test_ci_runs_readmes_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    runs = [shlex.split(line) for line in ci.splitlines() if re.match(r"^\s*python -m pytest\b", line)]
    assert runs == [[*readme_test_command(), "$@"]], runs


def test_readmes_test_command_closes_with_the_summary_line(tmp_path):
    """As written, with the project's pytest settings (pyproject.toml), on a file of two trivial tests: the last line
    says how many passed. A `-q` in pyproject's addopts on top of README's `-q` hid it."""
    argv = readme_test_command()
    assert argv[:3] == ["python", "-m", "pytest"]
    (tmp_path / "test_two.py").write_text("def test_a():\n    pass\n\n\ndef test_b():\n    pass\n")
    res = subprocess.run([sys.executable, *argv[1:], "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path),
                          "-p", "no:cacheprovider", str(tmp_path / "test_two.py")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    last = res.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"=*\s*\d+ passed(, \d+ \w+)* in [\d.]+s( \([\d:]+\))?\s*=*", last), last
