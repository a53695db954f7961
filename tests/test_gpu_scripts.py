"""The GPU job scripts (scripts/gpu_*.sh) against the code they call, here on the CPU, before a GPU session spends
minutes on them: every script parses, and every run each job lists is a command line the CLI accepts (flags known,
values of the right type, config files and scripts present). A run's work itself is the dry runs' to check
(their commands are in the scripts' headers)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from testtime.cli import app, click_errors  # typer's own copy of click where it carries one

ROOT = Path(__file__).resolve().parents[1]
# The shipped model's records, as results/shipped.env points at them (the ship checks' defaults): a pointer left stale
# at a ship fails test_the_shipped_records_are_the_shipped_models.
SHIPPED = dict(re.findall(r"^(SHIPPED_\w+)=(\S+)", (ROOT / "results/shipped.env").read_text(), re.M))
SHIPPED_ARCHIVE, SHIPPED_RUN = ROOT / SHIPPED["SHIPPED_ARCHIVE"], SHIPPED["SHIPPED_RUN"]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))

# (script, environment): each job script in the mode that lists its runs without running them
JOBS = [
    ("gpu_levers.sh plan", {}),
    ("gpu_levers.sh adapters1 second a2-adapters1 adapters2c16 int8-model int8", {"LIST": "1"}),
    *[("gpu_frontier.sh", {"LIST": "1", "SESSION": s, "RECIPES": "max fast"}) for s in "ABCD"],
    ("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2"}),
    ("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2", "EVAL": "0"}),
    ("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2", "EVAL": "0", "FLEX": "1"}),
    ("gpu_campaign.sh", {"LIST": "1", "PRETRAIN": "0"}),
    ("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "10", "CONFIG": "configs/data-gen75-muon.json"}),
    ("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2", "EVAL": "400",
                         "STAND_IN_EVAL": "results/h100-campaign-2026-12-06g/runs.tar.xz:seed7"}),
    ("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2", "EVAL": "400", "SOUP": "1"}),
    ("gpu_arch.sh", {"LIST": "1"}),
    ("gpu_arch.sh", {"LIST": "1", "NAMES": "base muon", "MINUTES": "3.5"}),
    ("gpu_gen.sh", {"LIST": "1"}),
    ("gpu_latency.sh", {"LIST": "1", "STEPS": "cold warm warm-b8 b8 serve lane-ttt warm-eager warm-a2"}),
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


def check_spec(spec: str, written: frozenset[str] = frozenset()) -> None:
    """One run of a job's list, checked as gpu_eval.sh would start it; `written`: the files earlier runs write."""
    name, flags = spec.split(":", 1)
    args = shlex.split(flags)
    if name == "join":  # gpu_eval.sh's: the background runs end here
        assert not args, f"{spec}: join takes no flags"
    elif name.startswith("script"):
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
        assert config in written or (ROOT / config).is_file(), f"{spec}: no config {config}"
    else:
        check_command(["evaluate", "--out", "runs/x", *args])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_parses(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("job", "env"), JOBS, ids=[f"{j} {e.get('SESSION', '')}".strip() for j, e in JOBS])
def test_every_listed_run_is_a_command_the_cli_takes(job, env):
    written: set[str] = set()
    for spec in listed_runs(job, env):
        try:
            check_spec(spec, frozenset(written))
        except click_errors.ClickException as e:
            pytest.fail(f"{job}: {spec}: {e.format_message()}")
        words = spec.split(":", 1)[1].split()
        if "--out" in words:
            written.add(words[words.index("--out") + 1])


def test_a_bad_flag_is_caught():
    with pytest.raises(click_errors.ClickException):
        check_spec("x:--tasks arc1/eval --no-such-flag")
    with pytest.raises(click_errors.ClickException):
        check_spec("x:--tasks arc1/eval --budget many")
    with pytest.raises(click_errors.ClickException):
        check_spec("pretrain-x:--config configs/data-gen50.json --profile-steps -1")
    with pytest.raises(AssertionError):
        check_spec("script-x:scripts/no_such_script.sh")


def test_eval_0_leaves_pretraining_alone_and_pretrain_0_the_evaluation_alone():
    runs = [spec.split(":")[0] for spec in listed_runs("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2", "EVAL": "0"})]
    assert runs[-1] == "pretrain-campaign" and not any("eval" in r or "ship" in r for r in runs)
    def returned(env):  # what the job sends back, on LIST's stderr
        return subprocess.run(["bash", str(ROOT / "scripts/gpu_campaign.sh")], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "LIST": "1", **env}, timeout=60).stderr.strip()

    assert returned({"GEN_SEED": "2", "EVAL": "0"}) == "returns: runs/pretrain-campaign/model"
    assert returned({"PRETRAIN": "0"}) == "returns: no model"
    assert "nothing to run" in returned({"PRETRAIN": "0", "EVAL": "0"})
    stand_in = listed_runs("gpu_campaign.sh", {"LIST": "1", "PRETRAIN": "0"})
    assert [s.split(":")[0] for s in stand_in] == ["campaign-eval", "script-ship"]
    assert all(s.endswith("--model models/testtime-grid-base") or s.endswith(" models/testtime-grid-base")
               for s in stand_in)

    # a stand-in evaluated in an earlier session: its ship checks on those records, before the stretch continuing it
    records = "results/h100-campaign-2026-12-06g/runs.tar.xz:seed7"
    # (the corpora generate in the background under the checks; the stretch waits for both, alone on the GPU)
    later = listed_runs("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2", "EVAL": "0", "STAND_IN_EVAL": records})
    assert [s.split(":")[0] for s in later] == ["script-rearc", "py-gen-bg", "py-gen-unseen-bg", "script-ship", "join",
                                                 "pretrain-campaign"]
    ship = f"script-ship:scripts/campaign_ship_checks.sh models/testtime-grid-base {records}"
    assert later[3] == ship and "--seed 2" in later[1] and "--seed 1002" in later[2]
    alone = listed_runs("gpu_campaign.sh", {"LIST": "1", "PRETRAIN": "0", "EVAL": "0", "STAND_IN_EVAL": records})
    assert alone == [ship]
    flex = listed_runs("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2", "EVAL": "0", "FLEX": "1",
                                           "STAND_IN_EVAL": records})
    assert flex[-1] == ship and not any(s.split(":")[0].endswith("-bg") for s in flex)  # FLEX times on a quiet machine
    # EVAL=400: the new stretch on the 400 after it, but not its checks (a second round of them would not fit)
    whole = listed_runs("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2", "EVAL": "400", "STAND_IN_EVAL": records})
    assert whole == [*later, "campaign-eval:--tasks arc1/eval --adapters 1 --model runs/pretrain-campaign/model"]
    assert "EVAL=2: 1 (" in returned({"GEN_SEED": "2", "EVAL": "2"})
    assert "only with EVAL=0" in returned({"PRETRAIN": "0", "STAND_IN_EVAL": records})
    assert "only EVAL=0" in returned({"PRETRAIN": "0", "EVAL": "400", "STAND_IN_EVAL": records})  # 400 recorded
    assert "no archive" in returned({"PRETRAIN": "0", "EVAL": "0", "STAND_IN_EVAL": "results/none.tar.xz:seed7"})
    for bad in (records.replace(":seed7", ":seed9"), records.split(":")[0]):  # a run not in it, or none named
        assert "not ARCHIVE:RUN" in returned({"PRETRAIN": "0", "EVAL": "0", "STAND_IN_EVAL": bad})
    # SOUP=1: the stretch averaged with the parent the calls carry, and that mean on the 400, after the stretch's own
    soup = listed_runs("gpu_campaign.sh", {"LIST": "1", "GEN_SEED": "2", "EVAL": "400", "SOUP": "1",
                                           "STAND_IN_EVAL": records})
    assert soup == [*whole, "py-soup:-m testtime.cli average models/testtime-grid-base runs/pretrain-campaign/model "
                            "--out runs/soup", "soup-eval:--tasks arc1/eval --adapters 1 --model runs/soup"]
    for env in ({"PRETRAIN": "0"}, {"GEN_SEED": "2", "EVAL": "0"}):  # no stretch, or no 400 to compare with
        assert "SOUP=1: only with a stretch and its 400" in returned({**env, "SOUP": "1"})


def test_a_stretch_stands_in_for_the_shipped_model_and_goes_back(tmp_path):
    """scripts/campaign_from.sh in a checkout of its own: the stretch's weights, config and index replace the shipped
    ones in the working tree only, with a STAND_IN file naming them; a model of another shape, a folder without
    weights and a tree already changed (even only staged) are refused; --restore brings back HEAD's files; --none
    leaves no weights in the tree."""
    repo, dest = tmp_path / "repo", tmp_path / "repo/models/testtime-grid-base"
    dest.mkdir(parents=True)
    shape = {"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 16,
             "vocab_size": 32}
    (dest / "config.json").write_text(json.dumps(shape))
    (dest / "model.safetensors").write_bytes(b"shipped")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "shipped"], check=True)

    def use(*args):
        return subprocess.run(["bash", str(ROOT / "scripts/campaign_from.sh"), *args], capture_output=True,
                              text=True, env={**os.environ, "CAMPAIGN_REPO": str(repo)}, cwd=tmp_path)

    def shipped():
        return sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"] and \
            (dest / "model.safetensors").read_bytes() == b"shipped" and json.loads((dest / "config.json").read_text()) == shape

    stretch = tmp_path / "stretch"
    stretch.mkdir()
    (stretch / "config.json").write_text(json.dumps({**shape, "torch_dtype": "bfloat16"}))
    (stretch / "model-00001-of-00002.safetensors").write_bytes(b"stretch 1")
    (stretch / "model-00002-of-00002.safetensors").write_bytes(b"stretch 2")
    (stretch / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    assert use("stretch").returncode == 0  # a folder relative to the caller's, not the checkout's
    assert sorted(p.name for p in dest.iterdir()) == ["STAND_IN", "config.json", "model-00001-of-00002.safetensors",
                                                      "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    assert (dest / "model-00002-of-00002.safetensors").read_bytes() == b"stretch 2"
    assert json.loads((dest / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert (dest / "model.safetensors.index.json").read_text() == '{"weight_map": {}}'
    assert (dest / "STAND_IN").read_text().startswith(str(stretch) + " ")
    again = use(str(stretch))  # a second stand-in over the first would lose track of what the tree held
    assert again.returncode == 1 and "--restore first" in again.stderr
    subprocess.run([*git, "add", "-A"], check=True)  # staged, as a results commit might: still refused
    assert use(str(stretch)).returncode == 1
    assert use("--restore").returncode == 0 and shipped()  # from HEAD, not from the index
    # a stretch parked in history: added by one commit, removed by the next, read back from the first
    shutil.copytree(stretch, repo / "candidates/s1")
    subprocess.run([*git, "add", "candidates"], check=True)
    subprocess.run([*git, "commit", "-qm", "park"], check=True)
    rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                         text=True).stdout.strip()
    subprocess.run([*git, "rm", "-rq", "candidates"], check=True)
    subprocess.run([*git, "commit", "-qm", "unpark"], check=True)
    assert use("HEAD~1:candidates/s1").returncode == 0
    assert (dest / "model-00001-of-00002.safetensors").read_bytes() == b"stretch 1"
    # named by its commit, which later commits do not move as they move HEAD~1
    assert (dest / "STAND_IN").read_text().startswith(f"{rev}:candidates/s1 ")
    assert not (repo / "candidates").exists()  # nothing left in the tree for the calls to carry
    assert use("--restore").returncode == 0 and shipped()
    refused = use(f"{rev}:candidates/s2")
    assert refused.returncode == 1 and shipped()
    assert refused.stderr.strip() == f"error: {rev}:candidates/s2: no folder candidates/s2 in commit {rev}"
    refused = use("0123abc:candidates/s1")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "no commit 0123abc" in refused.stderr
    refused = use(f"{rev}:candidates")  # a folder of the commit, but no model: named as given, not as unpacked
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"error: {rev}:candidates: no config.json (not an exported model folder)"
    colon = tmp_path / "a:b"  # a folder that exists is the caller's, ':' or not
    shutil.copytree(stretch, colon)
    assert use("a:b").returncode == 0 and (dest / "STAND_IN").read_text().startswith(f"{colon} ")
    assert use("--restore").returncode == 0 and shipped()

    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "config.json").write_text(json.dumps({**shape, "hidden_size": 16}))
    (wide / "model.safetensors").write_bytes(b"wide")
    refused = use(str(wide))
    assert refused.returncode == 1 and "hidden_size" in refused.stderr.splitlines()[-1] and shipped()
    (wide / "model.safetensors").unlink()
    (wide / "config.json").write_text(json.dumps(shape))
    no_weights = use(str(wide))
    assert no_weights.returncode == 1 and "safetensors" in no_weights.stderr and shipped()
    assert use(str(dest)).returncode == 1 and shipped()  # the shipped folder itself
    # --none: no weights carried (jobs that pretrain from scratch), and back from HEAD; no stand-in goes over it
    (dest / "model.safetensors.index.json").write_text("{}")  # an index would name shards that are gone
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "index"], check=True)
    assert use("--none").returncode == 0 and sorted(p.name for p in dest.iterdir()) == ["NO_WEIGHTS", "config.json"]
    over = use(str(stretch))
    assert over.returncode == 1 and "--restore first" in over.stderr
    assert use("--restore").returncode == 0 and (dest / "model.safetensors.index.json").exists()
    (dest / "model.safetensors.index.json").unlink()
    subprocess.run([*git, "commit", "-qam", "no index"], check=True)
    assert shipped()
    assert use(str(tmp_path / "nothing")).returncode == 1
    broken = subprocess.run(["bash", str(ROOT / "scripts/campaign_from.sh"), "--restore"], capture_output=True,
                            text=True, env={**os.environ, "CAMPAIGN_REPO": str(tmp_path / "stretch")})
    assert broken.returncode != 0  # not a checkout: the restore fails, and says so


def test_the_shipped_records_are_the_shipped_models():
    """results/shipped.env names runs its archive holds, made by the campaign session the model card names as the
    shipped checkpoint's (its row `(this checkpoint)`): a ship that moved the card but not the pointer fails here."""
    import tarfile

    with tarfile.open(SHIPPED_ARCHIVE) as archive:
        held = set(archive.getnames())
    for key in ("SHIPPED_RUN", "SHIPPED_A2", "SHIPPED_ICL"):
        assert f"{SHIPPED[key]}/results.jsonl" in held, f"{key}={SHIPPED[key]} not in {SHIPPED_ARCHIVE.name}"
    card = (ROOT / "models/testtime-grid-base/README.md").read_text()
    row = next(line for line in card.splitlines() if "(this checkpoint) |" in line)
    assert f"results/{SHIPPED_ARCHIVE.parent.name}.md" in row, row


@pytest.mark.parametrize(("kept", "verdict"), [(None, "not-better: stretch {0:g} against shipped {0:g} on 400 tasks"),
                                               (10, "partial:")])
def test_the_ship_checks_pair_a_stretch_with_the_shipped_models_own_records(tmp_path, kept, verdict):
    """scripts/campaign_ship_checks.sh's default REF/REF_RUN are the shipped model's records (a stale default would
    ship a stretch that beats an older model): given those very records as the stretch's, the verdict is a tie, so
    ARC-AGI-2 and the run without TTT are left out; given 10 of them, partial."""
    (tmp_path / "results").symlink_to(ROOT / "results")
    subprocess.run(["tar", "-xJf", str(SHIPPED_ARCHIVE), "-C", str(tmp_path), f"{SHIPPED_RUN}/results.jsonl"],
                   check=True)
    records = (tmp_path / SHIPPED_RUN / "results.jsonl").read_text().splitlines(keepends=True)
    score = sum(json.loads(r)["score"] for r in records)  # the shipped model's own, read from its records
    card = (ROOT / "models/testtime-grid-base/README.md").read_text()
    row = next(line for line in card.splitlines() if "(this checkpoint) |" in line)
    assert f"**{score:g}**" in row, row  # the records are the shipped model's, whose card gives that score
    verdict = verdict.format(score)
    (tmp_path / "runs/campaign-eval").mkdir(parents=True)
    (tmp_path / "runs/campaign-eval/results.jsonl").write_text("".join(records[:kept]))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # the verdict imports testtime from outside the checkout
    got = subprocess.run(["bash", str(ROOT / "scripts/campaign_ship_checks.sh"), "models/testtime-grid-base"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.startswith(f"ship checks: {verdict}") and "left out" in got.stdout
    if kept is None:  # the same records combined with themselves: the same attempts, the same score
        line = next(x for x in got.stdout.splitlines() if x.startswith("ship checks: with"))
        assert line.startswith(f"ship checks: with the shipped model's run, combined 400 tasks: {score:g} / 400"), line
    assert got.stdout.splitlines()[-1] == "ship checks: hold (400)"
    assert not (tmp_path / "runs/campaign-arc2").exists()


def test_the_ship_checks_take_a_stretchs_records_from_an_earlier_session(tmp_path):
    """Given ARCHIVE:RUN, campaign_ship_checks.sh pairs those records with a shipped model's (07's ninth stretch,
    not shipped: 211.5 against v10's 210, better; v10's records pinned, so the test outlives the defaults' move to a
    later model) and launches ARC-AGI-2's and the no-TTT evaluations on the model it is given (a launcher that only
    echoes stands in for the CLI); a run missing from the archive is refused."""
    (tmp_path / "results").symlink_to(ROOT / "results")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LAUNCH": "echo", "REF_RUN": "seed12", "REF_A2": "v10a2",
           "REF_ICL": "v10icl", "REF": "results/h100-campaign-2026-12-07c/runs.tar.xz"}

    def checks(records):
        return subprocess.run(["bash", str(ROOT / "scripts/campaign_ship_checks.sh"), "models/testtime-grid-base",
                               records], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)

    got = checks("results/h100-campaign-2026-12-07/runs.tar.xz:seed10")
    assert got.returncode == 0, got.stdout + got.stderr
    assert not (tmp_path / "runs/campaign-eval").exists()  # a later stretch's evaluation would take them for its own
    assert got.stdout.startswith("ship checks: better: stretch 211.5 against shipped 210 on 400 tasks")
    # ARC-AGI-2 at one adapter a task, as the shipped model's records and the stretch's 400
    for name, flags in (("campaign-arc2", "--tasks arc2/eval --adapters 1"),
                        ("campaign-icl", "--tasks arc1/eval --no-ttt")):
        launched = (tmp_path / "runs" / name / "eval.log").read_text().strip()
        assert launched == f"evaluate --out runs/{name} {flags} --model models/testtime-grid-base"
    missing = checks("results/h100-campaign-2026-12-07/runs.tar.xz:seed9")
    assert missing.returncode == 1 and "no seed9/results.jsonl" in missing.stdout


def test_the_ship_checks_end_in_the_decision_of_the_ship_rule(tmp_path):
    """After its evaluations, campaign_ship_checks.sh decides by testtime.report.ship against a shipped model's own
    checks (v9's, v9a2 and v9icl, pinned): the ninth stretch's 400 (better) with v9's checks as its own ships; with 6
    tasks of the 400 without TTT lost and none won, the no-TTT guard holds it; with no records (an evaluation that
    failed), it holds and says why. A hold exits 0: a result, not a failure. (LAUNCH=true stands in for the
    evaluations; REF and its runs are pinned, so the test outlives the defaults' move to a later model.)"""
    import tarfile

    (tmp_path / "results").symlink_to(ROOT / "results")
    with tarfile.open(ROOT / "results/h100-campaign-2026-12-06i/runs.tar.xz") as archive:
        checks = {name: [json.loads(line) for line in archive.extractfile(f"{ref}/results.jsonl").read().splitlines()]
                  for name, ref in (("campaign-arc2", "v9a2"), ("campaign-icl", "v9icl"))}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LAUNCH": "true", "REF_RUN": "seed9", "REF_A2": "v9a2",
           "REF_ICL": "v9icl", "REF": "results/h100-campaign-2026-12-06i/runs.tar.xz"}

    def run_checks() -> list[str]:
        got = subprocess.run(["bash", str(ROOT / "scripts/campaign_ship_checks.sh"), "models/testtime-grid-base",
                              "results/h100-campaign-2026-12-07/runs.tar.xz:seed10"], capture_output=True,
                             text=True, cwd=tmp_path, env=env, timeout=120)
        assert got.returncode == 0, got.stdout + got.stderr
        return got.stdout.splitlines()

    def decide(lost: int) -> list[str]:
        for name, records in checks.items():
            records = [dict(r) for r in records]
            if name == "campaign-icl":
                for r in [r for r in records if r["score"] == 1.0][:lost]:
                    r["score"] = 0.0
            (tmp_path / "runs" / name).mkdir(parents=True, exist_ok=True)
            (tmp_path / "runs" / name / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return run_checks()

    ships = decide(0)
    assert [line for line in ships if line.startswith("ship checks: better:")] == ships[:1]  # said once, first
    assert ships[-3].startswith("ship checks: arc2 clear: stretch 3.5 against shipped 3.5 on 120 tasks")
    assert ships[-2].startswith("ship checks: no-ttt clear: ") and ships[-1] == "ship checks: ship"
    held = decide(6)
    assert held[-2].startswith("ship checks: no-ttt worse: stretch 78.5 against shipped 84.5") and \
        held[-1] == "ship checks: hold (no-ttt)"
    (tmp_path / "runs/campaign-arc2/results.jsonl").unlink()
    assert run_checks()[-1].startswith(
        "ship checks: hold (the guards did not compare: runs/campaign-arc2/results.jsonl: no such file")
    # a check from another archive (the ninth stretch's, made in -07b), as ARCHIVE:RUN
    env["REF_ICL"] = "results/h100-campaign-2026-12-07b/runs.tar.xz:s9icl"
    assert "no-ttt clear: stretch 84.5 against shipped 80 on 400 tasks" in "\n".join(decide(0))


def test_a_background_run_goes_on_beside_the_next_until_a_join(runner_checkout):
    """gpu_eval.sh's runner: runs named *-bg start and the next run starts without waiting for them (it finds their
    files not yet written); `join` waits for every one of them, the slower second too, so the run after sees both
    files; a background run after the last join is waited for before the runner ends; each background run's output
    goes to a log of its own. A background run that fails stops the runner at its join, saying which, and the runs
    after it do not start. The runner runs here in the foreground, in a folder of its own."""
    tmp_path = runner_checkout
    (tmp_path / "scripts/make.sh").write_text('sleep "$2"; echo made > "runs/$1.txt"; exit "${3:-0}"\n')
    (tmp_path / "scripts/look.sh").write_text(
        'for f in a b; do [ -f runs/$f.txt ] && echo "$1 saw $f" || echo "$1 missed $f"; done\n')
    runner = f"bgtest{os.getpid()}"

    def run(*specs):
        for f in (tmp_path / "runs").glob("*.txt"):
            f.unlink()
        got = subprocess.run(["bash", "scripts/gpu_eval.sh", "--runner", *specs], capture_output=True, text=True,
                             cwd=tmp_path, timeout=60, env={**os.environ, "RUNNER": runner, "OUT": str(tmp_path / "out"),
                                                            "SNAP_ROOT": str(tmp_path / "snap")})
        done = Path(f"/tmp/testtime_{runner}.done")
        ended = done.is_file()
        done.unlink(missing_ok=True)
        return got, ended

    got, ended = run("script-a-bg:scripts/make.sh a 1", "script-b-bg:scripts/make.sh b 3",
                     "script-before:scripts/look.sh before", "join:", "script-after:scripts/look.sh after",
                     "script-c-bg:scripts/make.sh c 2")
    out = got.stdout
    assert got.returncode == 0 and ended, out + got.stderr
    assert "before missed a" in out and "before missed b" in out and "after saw a" in out and "after saw b" in out
    assert out.index("=== join: 2 background run(s)") < out.index("after saw a")
    assert (tmp_path / "runs/c.txt").is_file()  # the last background run, waited for at the end
    log = (tmp_path / f"runs/runner-{runner}-script-b-bg.log").read_text()
    assert log.startswith("=== script-b-bg: scripts/make.sh b 3") and re.search(r"^script-b-bg: \d+ s wall$", log, re.M)

    failed, ended = run("script-a-bg:scripts/make.sh a 1 7", "join:", "script-after:scripts/look.sh after")
    assert failed.returncode == 1 and not ended  # the caller sees a runner that stopped before finishing
    assert f"join: script-a-bg failed (status 7, runs/runner-{runner}-script-a-bg.log)" in failed.stdout
    assert "after" not in failed.stdout.split("join: the runner stops here")[-1]


def test_the_jobs_wheels_install_or_say_why_not(tmp_path):
    """scripts/gpu_wheels.sh, which gpu_eval.sh and gpu_pretrain_ddp.sh source: with no wheels carried or stashed it
    fails saying how to stash them; with wheels this Python cannot install (here: not a wheel) it falls back on
    the packages it has, and puts src/ on the path."""
    script = ROOT / "scripts/gpu_wheels.sh"
    probe = f'source {script} && echo "path=$PYTHONPATH"'

    def source():
        return subprocess.run(["bash", "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                              env={**os.environ, "PYTHONPATH": ""})

    if not list(Path("/root/stash").glob("*.whl")):  # a developer's machine may hold a stash of its own
        none = source()
        assert none.returncode == 1 and "bash scripts/carry_parts.sh --wheels" in none.stdout
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl/broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    run = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert run.returncode == 2 and "source it" in run.stdout  # run instead of sourced: it would set nothing
    fallback = source()
    assert fallback.returncode == 0, fallback.stdout + fallback.stderr
    assert fallback.stdout.strip() == "path=src:/tmp/site"


def test_carry_parts_fill_each_call_up_to_the_limit_and_join_back(tmp_path):
    """scripts/carry_parts.sh in a checkout of its own: every call (the tree, plus its folder) stays under the limit
    less the margin; the wheels travel whole, each in one call, spread over calls when one call cannot hold them
    all; the parts join back to the source byte for byte; each stashing call is printed once; a tracked file deleted
    from the tree is not counted; a source that fits beside the wheels is one call ending in the job; a wheel the
    tree leaves no room for, more than 99 parts, no wheels, an unknown argument or an empty source is refused, saying
    so, before anything is cut."""
    repo = tmp_path / "repo"
    (repo / ".whl").mkdir(parents=True)
    wheels = {"a.whl": b"w" * 3000, "b.whl": b"v" * 2500}
    for name, data in wheels.items():
        (repo / ".whl" / name).write_bytes(data)
    (repo / "tracked.bin").write_bytes(b"t" * 5000)
    (repo / "gone.bin").write_bytes(b"g" * 100)
    (repo / "untracked.txt").write_bytes(b"u" * 1000)  # carried too: not ignored
    (repo / ".gitignore").write_text(".whl/\n.carry*/\n")
    quiet = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}  # no user's excludes or hooks
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "tracked.bin", "gone.bin", ".gitignore"], ["commit", "-qm", "x"]):
        subprocess.run([*git, *args], check=True, env={**os.environ, **quiet})
    (repo / "gone.bin").unlink()  # tracked, deleted from the tree: not carried
    (repo / ".carry9").mkdir()  # a stale part of an earlier cut: removed
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(20_000))
    tree = 5000 + 1000 + len(".whl/\n.carry*/\n")

    def cut(room, source=src, *args):
        env = {**os.environ, **quiet, "CARRY_REPO": str(repo), "SRC": str(source), "LIMIT": str(tree + 500 + room),
               "MARGIN": "500"}
        return subprocess.run(["bash", str(ROOT / "scripts/carry_parts.sh"), *args], capture_output=True,
                              text=True, env=env, timeout=60)

    def folders():
        return sorted(repo.glob(".carry*"), key=lambda p: int(p.name[6:]))

    def check(got, sizes):
        assert got.returncode == 0, got.stderr
        assert [p.name for p in folders()] == [f".carry{i + 1}" for i in range(len(sizes))]
        assert [sum(f.stat().st_size for f in p.iterdir()) for p in folders()] == sizes
        parts = sorted(f for p in folders() for f in p.glob("rearc.part*"))
        assert [f.name for f in parts] == [f"rearc.part{i:02d}" for i in range(len(parts))]
        assert b"".join(f.read_bytes() for f in sorted(parts, key=lambda f: f.name)) == src.read_bytes()
        carried = sorted(f.name for p in folders() for f in p.glob("*.whl"))
        assert carried == sorted(wheels)
        assert all((p / n).read_bytes() == wheels[n] for p in folders() for n in wheels if (p / n).exists())
        calls = got.stdout.splitlines()
        assert [c.split("#")[-1].strip() for c in calls] == [f"carry: .carry{i + 1}" for i in range(len(sizes))]
        assert calls[-1].startswith(f"bash scripts/gpu_stash.sh .carry{len(sizes)} >/dev/null 2>&1; JOB")
        return calls

    # room 7000 a call: both wheels (5500) and 1500 of the source, then 7000, 7000, 4500
    check(cut(7000), [7000, 7000, 7000, 4500])
    # room 4000: the wheels do not fit one call together, so the second rides alone in call 2 beside 1500 bytes
    check(cut(4000), [4000, 4000, 4000, 4000, 4000, 4000, 1500])
    assert sorted(f.name for f in (repo / ".carry2").glob("*.whl")) == ["b.whl"]
    # room 5500: the wheels fill call 1 exactly, so it holds no part and part 00 opens call 2
    check(cut(5500), [5500, 5500, 5500, 5500, 3500])
    assert not list((repo / ".carry1").glob("rearc.part*")) and (repo / ".carry2/rearc.part00").exists()
    one = check(cut(5500 + 20_000), [25_500])  # the whole source beside the wheels
    assert one == ["bash scripts/gpu_stash.sh .carry1 >/dev/null 2>&1; JOB   # carry: .carry1"]

    alone = cut(4000, src, "--wheels")  # the wheels alone, for the jobs that do not pretrain: two calls
    assert alone.returncode == 0, alone.stderr
    assert [sorted(f.name for f in p.iterdir()) for p in folders()] == [["a.whl"], ["b.whl"]]
    assert [c.split("#")[-1].strip() for c in alone.stdout.splitlines()] == ["carry: .carry1", "carry: .carry2"]

    refused = cut(2999)  # a.whl (3000) fits no call
    assert refused.returncode == 1 and "leaves no room" in refused.stderr and "a.whl" in refused.stderr
    many = cut(3000)  # 25,500 bytes in calls of 3,000 is 9 parts, so the limit of 99 is not reached
    assert many.returncode == 0, many.stderr
    (tmp_path / "big.bin").write_bytes(b"b" * 300_000)
    too_many = cut(3000, tmp_path / "big.bin")  # 101 calls: more than two digits name
    assert too_many.returncode == 1 and "more than 99 parts" in too_many.stderr
    assert [p.name for p in folders()] == [f".carry{i + 1}" for i in range(9)]  # refused before any cut
    assert cut(7000, src, "--wheel").returncode == 2
    (tmp_path / "empty.bin").write_bytes(b"")
    empty = cut(7000, tmp_path / "empty.bin")
    assert empty.returncode == 1 and "is empty" in empty.stderr
    for w in wheels:
        (repo / ".whl" / w).unlink()
    bare = cut(7000)
    assert bare.returncode == 1 and "no wheels" in bare.stderr


def test_pick_attention_takes_varlen_only_where_it_passed_the_lane_and_is_faster(tmp_path):
    """scripts/pick_attention.py writes the stretch's config: varlen where the lane test passed and it saved at least
    5% of attention's time; flex where it was slower, where the lane test failed or was skipped, or where the
    measurements are missing or unreadable, saying why each time. The rest of the config is kept."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"lr": 0.0006, "datasets": ["arc1/train"], "attention": "flex"}))
    test = "test_varlen_spans_give_the_block_masks_attention_and_gradients"

    def table(varlen_ms):
        return ("### a run\n\n| variant | ms | compile s (about) | note |\n|---|---|---|---|\n"
                f"| 128 | 5.82 | 30 | |\n| varlen | {varlen_ms} | 4 | |\n")

    def run(varlen_ms, lane_child="", bench=True, lane=True):
        if bench:
            (tmp_path / "b.md").write_text(table(varlen_ms))
        if lane:
            (tmp_path / "l.xml").write_text(f'<testsuites><testsuite><testcase name="{test}">{lane_child}'
                                            '</testcase></testsuite></testsuites>')
        got = subprocess.run([sys.executable, str(ROOT / "scripts/pick_attention.py"), "--config", str(config),
                              "--bench", str(tmp_path / "b.md"), "--lane", str(tmp_path / "l.xml"),
                              "--out", str(tmp_path / "o.json")], capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stderr
        out = json.loads((tmp_path / "o.json").read_text())
        assert {k: v for k, v in out.items() if k != "attention"} == {"lr": 0.0006, "datasets": ["arc1/train"]}
        return out["attention"], got.stdout

    assert run("3.10")[0] == "varlen"
    assert run("5.60")[0] == "flex"  # under 5% faster
    kind, why = run("3.10", "<failure message='x'/>")
    assert kind == "flex" and "did not pass" in why
    kind, why = run("3.10", "<skipped message='no kernel'/>")
    assert kind == "flex" and "did not pass" in why
    # the bench file collects every run's table: an earlier run's varlen time is not this run's failed one
    (tmp_path / "b.md").write_text(table("3.10") + "\n" + table("- | - | RuntimeError: no kernel").replace("| 4 | |", ""))
    kind, why = run("3.10", bench=False)
    assert kind == "flex" and "no varlen" in why
    os.utime(tmp_path / "l.xml", (0, 0))  # a lane report older than the bench: a lane run that wrote none
    (tmp_path / "b.md").write_text(table("3.10"))
    kind, why = run("3.10", bench=False, lane=False)
    assert kind == "flex" and "predates" in why
    (tmp_path / "b.md").unlink()
    kind, why = run("3.10", bench=False)
    assert kind == "flex" and "FileNotFoundError" in why
    (tmp_path / "l.xml").write_text("<testsuites><unclosed>")
    kind, why = run("3.10", lane=False)
    assert kind == "flex" and "ParseError" in why


def _archive(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts/results_archive.sh"), *args], capture_output=True, text=True,
                          timeout=120)


def test_results_archives_that_left_the_tree_unpack_from_history(tmp_path):
    """scripts/results_archive.sh: each archive results/ARCHIVES.md lists is out of the tree (so GPU calls do not
    carry it) and unpacks from the commit it names, checked by its sha256; one still in the tree unpacks from there;
    a path in neither is named in a one-line error."""
    listed = _archive("--list").stdout.split()
    assert len(listed) >= 9 and all(p.startswith("results/") and p.endswith(".tar.xz") for p in listed)
    tracked = subprocess.run(["git", "ls-files", "results"], capture_output=True, text=True, cwd=ROOT).stdout.split()
    assert not set(listed) & set(tracked)
    arch = "results/h200-arch-2026-12-04/runs.tar.xz"
    commit = next(r.split("|")[4].strip(" `") for r in (ROOT / "results/ARCHIVES.md").read_text().splitlines()
                  if f"| {arch} |" in r)
    if subprocess.run(["git", "cat-file", "-e", f"{commit}:{arch}"], cwd=ROOT).returncode != 0:
        pytest.skip(f"commit {commit} is not in this clone's history (a shallow clone)")
    got = _archive(arch, str(tmp_path / "old"))
    assert got.returncode == 0 and "from commit" in got.stdout, got.stderr
    assert list((tmp_path / "old").rglob("summary.json"))
    kept = _archive(str(SHIPPED_ARCHIVE.relative_to(ROOT)), str(tmp_path / "kept"))  # the shipped model's stay
    assert kept.returncode == 0 and "from the tree" in kept.stdout
    assert (tmp_path / "kept" / SHIPPED_RUN / "summary.json").is_file()
    missing = _archive("results/nowhere/runs.tar.xz", str(tmp_path / "x"))
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0
    assert "results/nowhere/runs.tar.xz: neither in the tree nor in" in missing.stderr


def test_the_ship_checks_compare_the_stretch_at_the_shipped_records_adapters(tmp_path):
    """scripts/campaign_ship_checks.sh: a stretch's 400 with two adapters a task against the shipped model's records
    of one is refused by name before any evaluation (two adapters win about 10 of the 400 whatever the weights); at
    one, a stretch that solves one task more is `better` (LAUNCH=echo stands in for the CLI)."""
    import tarfile

    with tarfile.open(SHIPPED_ARCHIVE) as archive:
        shipped = [json.loads(line) for line in archive.extractfile(f"{SHIPPED_RUN}/results.jsonl").read().splitlines()]
    missed = next(i for i, r in enumerate(shipped) if r["score"] == 0 and len(r["correct"]) == 1)

    def checks(adapters: int) -> subprocess.CompletedProcess:
        records = [dict(r) for r in shipped]
        records[missed].update(score=1.0, correct=[True])
        for r in records:
            if adapters > 1:
                r["adapters"] = adapters
        run = tmp_path / "runs/campaign-eval"
        run.mkdir(parents=True, exist_ok=True)
        (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        env = {**os.environ, "REF": str(SHIPPED_ARCHIVE), "LAUNCH": "echo", "PYTHONPATH": str(ROOT / "src")}
        return subprocess.run(["bash", str(ROOT / "scripts/campaign_ship_checks.sh"), "stretch-model"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    two = checks(2)
    assert two.returncode == 1 and "the shipped records train [1] adapters a task, the stretch's [2]" in two.stdout
    assert not (tmp_path / "runs/campaign-arc2").exists()
    one = checks(1)
    assert one.returncode == 0, one.stdout + one.stderr
    assert one.stdout.startswith("ship checks: better: stretch ") and "(1 won, 0 lost" in one.stdout


def test_a_tree_without_the_shipped_weights_refuses_runs_that_evaluate_them(runner_checkout):
    """After `campaign_from.sh --none` the calls carry no default model: gpu_eval.sh refuses, before its runner
    starts, a run that would evaluate it (no --model), and names it; pretraining from scratch is let through."""
    tmp_path = runner_checkout
    (tmp_path / "models/testtime-grid-base").mkdir()
    (tmp_path / "models/testtime-grid-base/NO_WEIGHTS").write_text("out\n")

    def call(*specs):
        return subprocess.run(["bash", "scripts/gpu_eval.sh", *specs], capture_output=True, text=True, cwd=tmp_path,
                              timeout=60, env={**os.environ, "RUNNER": f"noweights{os.getpid()}", "WAIT": "0",
                                               "OUT": str(tmp_path / "out")})

    got = call("pretrain-arch-base:--config configs/arch-base.json", "holdout-base:--tasks arc1/train-holdout")
    assert got.returncode == 1 and "gpu_eval: holdout-base evaluates the shipped model" in got.stdout
    assert not list(Path("/tmp").glob(f"testtime_noweights{os.getpid()}.*"))  # no runner started


def test_the_muon_rematch_compiles_once_and_fits_a_short_budget():
    """gpu_arch.sh: muon is base's architecture, so with base a candidate it gets no warm run of its own; HOLDOUT=0
    and MUON_STEP=0 leave out the held-out evaluations and the optimizer's step benchmark."""
    def names(env):
        return [s.split(":")[0] for s in listed_runs("gpu_arch.sh", {"LIST": "1", **env})]

    assert names({"NAMES": "base muon"}) == ["py-muon-step", "pretrain-warm-base", "pretrain-arch-base",
                                             "pretrain-arch-muon", "holdout-base", "holdout-muon", "py-arch"]
    assert names({"NAMES": "muon", "HOLDOUT": "0", "MUON_STEP": "0"}) == ["pretrain-warm-muon", "pretrain-arch-muon",
                                                                          "py-arch"]
