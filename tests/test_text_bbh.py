"""Building BIG-Bench Hard's 27 tasks from the BIG-bench sdist (`testtime.text.bbh`, scripts/make_bbh_from_bigbench.py):
on a small fake sdist of the same layout, every task is built, no query is a demonstration, and the answers follow
BBH's conventions (letters naming the right choice, renamed fixed answers, digits, generated tasks solved right)."""

import io
import json
import random
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from testtime.text.bbh import BBH_TASKS, ROOT, SPECS, boolean_expressions, build_bbh
from testtime.text.tasks import load_text_tasks

REPO = Path(__file__).resolve().parents[1]
NAMES = [f"Person{i}" for i in range(20)]


def _source_examples(spec, n: int) -> list[dict]:
    """Examples in the shape BIG-bench stores this task, each with a distinct right answer to check."""
    out = []
    for i in range(n):
        if spec.name == "hyperbaton":
            right = i % 2
            out.append({"input": f'Which sentence has the correct adjective order: a " big red ball{i} " '
                                 f'b " red big ball{i} " ?', "target_scores": {"a": int(right == 0), "b": int(right)}})
        elif spec.name == "snarks":
            out.append({"input": f"Which statement is sarcastic? (a) Great, rain {i}. (b) Sadly, rain {i}.",
                        "target_scores": {"(a)": 1, "(b)": 0}})
        elif spec.name == "reasoning_about_colored_objects":
            k = i % 4
            out.append({"input": f"How many balls {i}?",
                        "target_scores": {"0": 0, "zero": 0, "1": 0, "one": 0, str(k): 1,
                                          ["zero", "one", "two", "three"][k]: 1}})
        elif spec.answers == "letters":
            choices = {f"choice {i}.{j}": int(j == i % 3) for j in range(3 + i % 2)}
            out.append({"input": f"question {i}", "target_scores": choices})
        elif spec.answers == "fixed":
            keys = {"causal_judgement": ("Yes", "No"), "formal_fallacies": ("valid", "invalid"),
                    "navigate": ("True", "False"), "sports_understanding": ("plausible", "implausible")}[spec.name]
            out.append({"input": f"statement {i}", "target_scores": {keys[0]: i % 2, keys[1]: 1 - i % 2}})
        elif spec.name == "dyck_languages":
            out.append({"input": f"( [ {'{ ' * (i % 3)}", "target_scores": {"] )": 0, "} ] )": 0, "} } ] )": 0}})
            out[-1]["target_scores"][["] )", "} ] )", "} } ] )"][i % 3]] = 1
            out[-1]["input"] += f" # {i}"
        elif spec.name == "object_counting":
            out.append({"input": f"I have {i} apples. How many fruits?", "target": [f"word{i}", str(i)]})
        else:  # word_sorting
            out.append({"input": f"zeta alpha m{i}", "target": f"alpha m{i} zeta"})
    return out


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> Path:
    """A tar.gz laid out as bigbench-1.0.0's: a task.json per JSON task (with a repeat, and a query-sized pool),
    and web_of_lies/task.py holding its `_names`."""
    path = tmp_path_factory.mktemp("bb") / "bigbench-1.0.0.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"{ROOT}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for spec in SPECS:
            if spec.source.startswith("generate:"):
                continue
            examples = _source_examples(spec, 30)
            examples.append(dict(examples[3]))  # BIG-bench repeats some inputs: a repeat is never both
            add(f"{spec.source}/task.json", json.dumps({"task_prefix": f"Do {spec.name}.", "examples": examples}).encode())
        add("web_of_lies/task.py", f"class T:\n    _names = {NAMES!r}\n".encode())
    return path


def _web_of_lies_truth(text: str) -> str:
    first = re.match(r"Question: (\w+) (tells the truth|lies)\.", text)
    truth = first.group(2) == "tells the truth"
    for says in re.findall(r"\w+ says \w+ (tells the truth|lies)\.", text):
        truth = truth == (says == "tells the truth")
    return "Yes" if truth else "No"


def test_all_27_tasks_build_in_bbh_conventions_and_no_query_is_a_demo(sdist, tmp_path):
    out = tmp_path / "bbh.jsonl"
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "make_bbh_from_bigbench.py"), str(sdist),
                          "--queries", "15", "--dev", "4", "--out", str(out)], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO / "src")})
    assert res.returncode == 0, res.stderr
    tasks = load_text_tasks(out)
    # The development file: the same demonstrations, other queries (never a demo or a scored query).
    devs = {t.id: t for t in load_text_tasks(tmp_path / "bbh-dev.jsonl")}
    assert set(devs) == set(BBH_TASKS) and "wrote 27 development tasks" in res.stdout
    for t in tasks:
        d = devs[t.id]
        assert d.demos == t.demos and len(d.queries) == 4
        assert not {x for x, _ in d.queries} & {x for x, _ in t.demos + t.queries}, t.id
        assert all(y in (d.options or (y,)) for _, y in d.queries)
    # Asking for development queries leaves the task itself as it was.
    again = tmp_path / "again.jsonl"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_bbh_from_bigbench.py"), str(sdist), "--queries", "15",
                    "--dev", "0", "--out", str(again)], check=True, capture_output=True, env={"PYTHONPATH": str(REPO / "src")})
    assert again.read_text() == out.read_text() and not (tmp_path / "again-dev.jsonl").exists()
    assert [t.id for t in tasks] == list(BBH_TASKS) and len(BBH_TASKS) == 27 and "wrote 27 tasks" in res.stdout
    by = {t.id: t for t in tasks}
    for t in tasks:
        assert len(t.demos) == 10 and 1 <= len(t.queries) <= 15 and t.has_targets
        demo_inputs = {x for x, _ in t.demos}
        assert not demo_inputs & {x for x, _ in t.queries}, t.id
        assert len({x for x, _ in t.queries}) == len(t.queries)
    assert len(by["date_understanding"].queries) == 15 and len(by["web_of_lies"].queries) == 15

    for spec in SPECS:
        t = by[spec.name]
        if spec.answers == "letters":
            assert t.options and t.options[0] == "(A)"
            for x, y in t.demos + t.queries:
                lines = dict(line.split(" ", 1) for line in x.split("\nOptions:\n")[1].splitlines())
                assert y in lines and set(lines) <= set(t.options)
                chosen = lines[y]
                n = re.search(r"(\d+)", x).group(1)
                if spec.name == "hyperbaton":
                    assert chosen == (f"big red ball{n}" if int(n) % 2 == 0 else f"red big ball{n}")
                    assert x.startswith("Which sentence has the correct adjective order?\nOptions:\n(A) ")
                elif spec.name == "snarks":
                    assert chosen == f"Great, rain {n}."
                elif spec.name == "reasoning_about_colored_objects":
                    assert chosen == ["zero", "one", "two", "three"][int(n) % 4] and not any(v.isdigit() for v in lines.values())
                    assert list(lines.values())[:2] == ["zero", "one"]  # BBH's fixed order, kept
                else:
                    assert chosen == f"choice {n}.{int(n) % 3}"
        elif spec.answers == "fixed":
            assert t.options and all(y in t.options for _, y in t.demos + t.queries)
    assert by["navigate"].options == ("No", "Yes") and by["sports_understanding"].options == ("no", "yes")
    assert by["causal_judgement"].options == ("No", "Yes") and by["formal_fallacies"].options == ("invalid", "valid")
    assert all(y == re.search(r"I have (\d+)", x).group(1) for x, y in by["object_counting"].queries)
    assert by["dyck_languages"].options is None and by["word_sorting"].options is None

    # The generated tasks, solved independently.
    for x, y in by["boolean_expressions"].demos + by["boolean_expressions"].queries:
        assert x.endswith(" is") and len(x.split()) == 9 and y == str(eval(x.removesuffix(" is")))  # noqa: S307
    for x, y in by["multistep_arithmetic_two"].demos + by["multistep_arithmetic_two"].queries:
        assert re.fullmatch(r"\(\(-?\d( [-+*] -?\d){3}\) [-+*] \(-?\d( [-+*] -?\d){3}\)\) =", x)
        assert y == str(eval(x.removesuffix(" ="))) and by["multistep_arithmetic_two"].options is None  # noqa: S307
    for x, y in by["web_of_lies"].demos + by["web_of_lies"].queries:
        assert y == _web_of_lies_truth(x) and len(re.findall(r"Person\d+", x)) == 10
    assert {y for _, y in by["web_of_lies"].queries} == {"Yes", "No"}


def test_the_build_is_seeded_and_a_task_subset_keeps_its_tasks(sdist):
    a, _ = build_bbh(sdist, queries=5, names=["navigate", "web_of_lies"])
    assert [t.id for t in a] == ["navigate", "web_of_lies"]
    assert a == build_bbh(sdist, queries=5, names=["web_of_lies", "navigate"])[0]
    assert a != build_bbh(sdist, queries=5, names=["navigate", "web_of_lies"], seed=1)[0]
    # The JSON tasks hold 31 examples with one repeat: 30 distinct, so 20 queries and nothing left for development.
    many, devs = build_bbh(sdist, queries=25, dev=5, names=["navigate", "web_of_lies"])
    assert [len(t.queries) for t in many] == [20, 25] and [d.id for d in devs] == ["web_of_lies"]
    with pytest.raises(ValueError, match="not BBH tasks: nope"):
        build_bbh(sdist, names=["nope"])
    with pytest.raises(ValueError, match="30 usable examples, need more than 40"):
        build_bbh(sdist, demos=40, names=["navigate"])


def test_boolean_expressions_are_the_length_8_grammar():
    pool = boolean_expressions()
    assert len(pool) == len(set(pool)) > 1000
    rng = random.Random(0)
    for e in rng.sample(pool, 200):
        toks = e.split()
        assert len(toks) == 8 and toks[-1] in ("True", "False", ")")
        assert toks.count("(") == toks.count(")")
        eval(e)  # noqa: S307 - every expression is valid Python
