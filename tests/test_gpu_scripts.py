"""The GPU job scripts (scripts/gpu_*.sh) against the code they call, here on the CPU, before a GPU session spends
minutes on them: every script parses, and every run each job lists is a command line the CLI accepts (flags known,
values of the right type, config files and scripts present). A run's work itself is the dry runs' to check
(their commands are in the scripts' headers)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from typer.main import get_command

from testtime.cli import app, click_errors  # typer's own copy of click where it carries one

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))

# (script, environment): each job script in the mode that lists its runs without running them
JOBS = [
    ("gpu_levers.sh plan", {}),
    *[("gpu_frontier.sh", {"LIST": "1", "SESSION": s, "RECIPES": "max fast"}) for s in "ABCD"],
    ("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2"}),
    ("gpu_arch.sh", {"LIST": "1"}),
    ("gpu_gen.sh", {"LIST": "1"}),
    ("gpu_latency.sh", {"LIST": "1", "STEPS": "cold warm warm-b8 b8 serve lane-ttt warm-graphs warm-b8-graphs"}),
]


def listed_runs(job: str, env: dict[str, str]) -> list[str]:
    """The NAME:FLAGS specs a job script would hand to gpu_eval.sh."""
    script, *args = job.split()
    out = subprocess.run(["bash", str(ROOT / "scripts" / script), *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **env}, timeout=60, check=True).stdout
    # `plan` prints "NAME EST GPU-min SPEC", LIST=1 of gpu_frontier "EST min SPEC", the others SPEC alone
    specs = [line.split("  ")[-1].strip() for line in out.splitlines() if ":" in line and "GPU-minutes" not in line]
    assert specs, f"{job}: no runs listed"
    return specs


def check_command(argv: list[str]) -> None:
    """Parse a `testtime` command line as the CLI would, without running it (a bad flag raises click's error)."""
    group = get_command(app)
    with group.make_context("testtime", list(argv), resilient_parsing=False) as ctx:
        sub = group.get_command(ctx, argv[0])
        assert sub is not None, f"no command {argv[0]!r}"
        sub.make_context(argv[0], argv[1:], parent=ctx).close()


def check_spec(spec: str) -> None:
    name, flags = spec.split(":", 1)
    args = shlex.split(flags)
    if name.startswith("script"):
        assert (ROOT / args[0]).is_file(), f"{spec}: no script {args[0]}"
    elif name.startswith("py"):
        if args[:2] == ["-m", "testtime.cli"]:
            check_command(args[2:])
        elif args[0] == "-m":  # another module (pytest): importable, and the files it names present
            assert importlib.util.find_spec(args[1]), f"{spec}: no module {args[1]}"
            for path in (a for a in args[2:] if a.endswith(".py")):
                assert (ROOT / path).is_file(), f"{spec}: no file {path}"
        else:
            words = flags.split()  # as gpu_eval.sh splits them: on spaces, its quotes kept
            if "--settings" in words:  # a benchmark's settings are JSON
                json.loads(words[words.index("--settings") + 1])
            assert (ROOT / args[0]).is_file(), f"{spec}: no script {args[0]}"
    elif name.startswith("bench"):
        pass  # bench_pretrain's or bench_stages' own flags (argparse), checked by their tests
    elif name.startswith("pretrain"):
        check_command(["pretrain", "--run-dir", "runs/x", *args])
        config = args[args.index("--config") + 1]
        assert (ROOT / config).is_file(), f"{spec}: no config {config}"
    else:
        check_command(["evaluate", "--out", "runs/x", *args])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_parses(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("job", "env"), JOBS, ids=[f"{j} {e.get('SESSION', '')}".strip() for j, e in JOBS])
def test_every_listed_run_is_a_command_the_cli_takes(job, env):
    for spec in listed_runs(job, env):
        try:
            check_spec(spec)
        except click_errors.ClickException as e:
            pytest.fail(f"{job}: {spec}: {e.format_message()}")


def test_a_bad_flag_is_caught():
    with pytest.raises(click_errors.ClickException):
        check_spec("x:--tasks arc1/eval --no-such-flag")
    with pytest.raises(click_errors.ClickException):
        check_spec("x:--tasks arc1/eval --budget many")
    with pytest.raises(click_errors.ClickException):
        check_spec("pretrain-x:--config configs/data-gen50.json --profile-steps -1")
    with pytest.raises(AssertionError):
        check_spec("script-x:scripts/no_such_script.sh")
