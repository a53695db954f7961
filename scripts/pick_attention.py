"""Pick a campaign stretch's packed attention from what FLEX=1 measured on the same machine a minute before.

`scripts/gpu_campaign.sh` with FLEX=1 times FlexAttention's block mask and FlashAttention's variable-length kernel
on the stretch's own batches (benchmarks/bench_flex_blocks.py -> runs/bench-flex.md) and runs the GPU lane's test
that the two agree (-> a JUnit file). This writes the stretch's config: the campaign's config with
`"attention": "varlen"` where the lane test passed and varlen's forward and backward took at most (1 - MIN_GAIN)
of the block mask's time; else the config unchanged. Anything missing or unreadable keeps the config unchanged,
saying why: a stretch never waits on this choice, and its run folder's config.json records the one it made.

    python scripts/pick_attention.py --config configs/data-gen50.json --bench runs/bench-flex.md \
        --lane runs/lane-flex.xml --out runs/campaign.json
"""

from __future__ import annotations

import argparse
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

LANE_TEST = "test_varlen_spans_give_the_block_masks_attention_and_gradients"


def variant_ms(bench: str) -> dict[str, float]:
    """Milliseconds by variant from the last table bench_flex_blocks.py appended (`| name | ms | compile s | note |`
    after its last `### ` header: the file collects every run's), a variant that failed left out."""
    last = bench[max(0, bench.rfind("### ")):]
    return {m[1]: float(m[2]) for m in re.finditer(r"^\| ([\w-]+) \| (\d+(?:\.\d+)?) \| ", last, re.MULTILINE)}


def lane_passed(junit: str) -> bool:
    """Whether the JUnit report holds the varlen lane test, neither failed, errored nor skipped."""
    for case in ET.fromstring(junit).iter("testcase"):
        if case.get("name") == LANE_TEST:
            return not any(child.tag in ("failure", "error", "skipped") for child in case)
    return False


def choose(bench: Path, lane: Path, min_gain: float) -> tuple[str, str]:
    """("varlen" or "flex", why)."""
    try:
        ms = variant_ms(bench.read_text())
        passed = lane_passed(lane.read_text())
        if lane.stat().st_mtime < bench.stat().st_mtime:  # the lane runs after the bench: this report is older
            return "flex", f"kept flex: {lane} predates {bench} (a lane run that wrote no report)"
    except (OSError, ET.ParseError, ValueError) as e:
        return "flex", f"kept flex: {type(e).__name__}: {e}"
    if "varlen" not in ms or "128" not in ms:
        return "flex", f"kept flex: {bench} times no varlen and 128 pair ({', '.join(ms) or 'none'})"
    if not passed:
        return "flex", f"kept flex: the lane test {LANE_TEST} did not pass in {lane}"
    if ms["varlen"] > (1 - min_gain) * ms["128"]:
        return "flex", f"kept flex: varlen {ms['varlen']:.2f} ms against {ms['128']:.2f} ms"
    return "varlen", f"varlen: {ms['varlen']:.2f} ms against flex's {ms['128']:.2f} ms, and the lane test passed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--bench", type=Path, default=Path("runs/bench-flex.md"))
    ap.add_argument("--lane", type=Path, default=Path("runs/lane-flex.xml"))
    ap.add_argument("--out", type=Path, default=Path("runs/campaign.json"))
    ap.add_argument("--min-gain", type=float, default=0.05, help="the share of attention's time varlen must save")
    args = ap.parse_args()
    try:
        config = json.loads(args.config.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {args.config}: {e}") from None
    kind, why = choose(args.bench, args.lane, args.min_gain)
    config["attention"] = kind
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(config, indent=2) + "\n")
    print(f"attention for the stretch: {why} (wrote {args.out})")


if __name__ == "__main__":
    main()
