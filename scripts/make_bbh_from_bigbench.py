"""Write BIG-Bench Hard's 27 tasks as text few-shot tasks, built from the BIG-bench package on PyPI.

BBH's tasks are BIG-bench tasks; no BBH package installs here, but the `bigbench` sdist (1.0.0, 358 MB, Apache
2.0) holds their sources. `testtime.text.bbh` says how each becomes a task in BBH's answer conventions (letters
where BBH lists options, Yes/No and other fixed answers, free answers for dyck, sorting, counting, arithmetic)
and how the three generated tasks (boolean_expressions, multistep_arithmetic_two, web_of_lies) are generated
again. Per task, seeded: `--demos` demonstrations, then up to `--queries` queries, never the same input twice.
These are BIG-bench examples, not BBH's own 250-example splits (data/text/README.md says how they differ).

    python -m pip download --no-deps --no-binary :all: -d /tmp/bb bigbench==1.0.0
    python scripts/make_bbh_from_bigbench.py /tmp/bb/bigbench-1.0.0.tar.gz   # data/text/bbh27.jsonl, bbh27-dev.jsonl
    python scripts/make_bbh_from_bigbench.py /tmp/bb/bigbench-1.0.0.tar.gz --queries 20 --out small.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from testtime.text.bbh import BBH_TASKS, build_bbh
from testtime.text.tasks import write_text_tasks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sdist", type=Path, help="bigbench-1.0.0.tar.gz from PyPI")
    ap.add_argument("--out", type=Path, default=Path("data/text/bbh27.jsonl"))
    ap.add_argument("--demos", type=int, default=10)
    ap.add_argument("--queries", type=int, default=250, help="at most this many queries a task (BBH: 250)")
    ap.add_argument("--max-chars", type=int, default=None, help="skip examples with longer inputs (default: none)")
    ap.add_argument("--tasks", nargs="+", choices=BBH_TASKS, help="only these tasks (default: all 27)")
    ap.add_argument("--dev", type=int, default=30, help="development queries a task, for tuning (0: none)")
    ap.add_argument("--dev-out", type=Path, default=None, help="default: OUT with -dev before .jsonl")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.demos < 1 or args.queries < 1 or args.dev < 0:
        ap.error("--demos and --queries must be at least 1, --dev at least 0")
    if not args.sdist.is_file():
        ap.error(f"{args.sdist}: no such file")
    tasks, devs = build_bbh(args.sdist, demos=args.demos, queries=args.queries, seed=args.seed,
                            max_chars=args.max_chars, names=args.tasks, dev=args.dev, say=print)
    write_text_tasks(tasks, args.out)
    n = sum(len(t.queries) for t in tasks)
    print(f"wrote {len(tasks)} tasks, {n} queries, {args.out.stat().st_size / 1e6:.1f} MB to {args.out}")
    if devs:
        dev_out = args.dev_out or args.out.with_name(args.out.stem + "-dev.jsonl")
        write_text_tasks(devs, dev_out)
        print(f"wrote {len(devs)} development tasks (the same demos, other queries), "
              f"{sum(len(t.queries) for t in devs)} queries, to {dev_out}")


if __name__ == "__main__":
    main()
