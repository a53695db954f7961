"""Where a pretraining step's time goes (issue 30, item 1: the 40% MFU goal). A few steps run under torch.profiler
and their kernels are summed by kind: matrix products, attention, Inductor's fused elementwise kernels, the
optimizer, communication, copies; beside that, `busy`: the kernels' summed time over the wall clock (under 1, the
device idled between kernels; kernels that overlap on several streams, DDP's communication say, can take it past 1).

The kinds say which lever pays next: a device idle between kernels wants CUDA graphs (or more work a launch),
elementwise kernels that rival the matrix products want fusion or a wider model, attention that dominates wants a
better kernel or shorter documents.

    testtime pretrain --config C --run-dir R --profile-steps 5     # R/profile.json, and a line in the log
    python benchmarks/bench_pretrain.py --profile 5                # the same breakdown for each variant
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

AFTER = 100  # steps of a call before its profile: compilation and the allocator's warm-up are behind by then

# A kernel's kind: the first whose patterns its name holds (lower case). Inductor names its own kernels triton_*:
# triton_tem_* are templates (FlexAttention's kernels; a matrix product only under max-autotune, which our configs
# do not use), the other triton_* fused pointwise and reduction kernels. On the CPU the profile reads aten operators
# instead, by the same table.
KINDS = (
    ("attention", ("flex_attention", "flash", "fmha", "attention", "triton_tem")),
    ("matmul", ("gemm", "cutlass", "nvjet", "xmma", "cublas", "aten::mm", "aten::addmm", "aten::bmm", "aten::matmul",
                "aten::linear")),
    ("optimizer", ("multi_tensor", "adam", "muon", "foreach")),
    ("communication", ("nccl",)),
    ("elementwise", ("triton_", "elementwise", "vectorized", "reduce", "aten::")),
    ("copy", ("memcpy", "memset")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, pats in KINDS if any(p in low for p in pats)), "other")


def breakdown(events: list[tuple[str, float]], steps: int, wall_s: float, top: int = 12) -> dict[str, Any]:
    """Where `steps` profiled steps spent their time: `events` are (name, self seconds) of each kernel (or each CPU
    operator), summed over the steps. Returns ms a step by kind and the `top` names, each with its share of the
    summed time, and `busy`: that sum over the wall clock."""
    total = sum(sec for _, sec in events)
    by_kind: dict[str, float] = {}
    by_name: dict[str, float] = {}
    for name, sec in events:
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + sec
        by_name[name] = by_name.get(name, 0.0) + sec

    def per_step(sec: float) -> float:
        return round(1000 * sec / steps, 3)

    def share(sec: float) -> float:
        return round(sec / total, 4) if total else 0.0

    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    kinds = sorted(by_kind.items(), key=lambda kv: -kv[1])
    return {"steps": steps, "wall_ms": per_step(wall_s), "busy": round(total / wall_s, 4) if wall_s else None,
            "by_kind": {k: {"ms": per_step(v), "share": share(v)} for k, v in kinds},
            "top": [{"name": n[:90], "kind": kind_of(n), "ms": per_step(v), "share": share(v)} for n, v in ranked]}


def profiled_events(prof, cuda: bool) -> list[tuple[str, float]]:
    """(name, self seconds) of every device kernel, copy and fill under `prof`, or of every CPU operator where there
    is no device. CPU operators nest (aten::linear calls aten::addmm): self time counts each microsecond once. The
    device's user annotations (`Optimizer.step#AdamW.step`, a compiled graph's range) span kernels already counted,
    and a context sync is waiting, not work: both are left out, as torch's own benchmarking leaves them."""
    from torch.autograd import DeviceType

    want = DeviceType.CUDA if cuda else DeviceType.CPU
    out = []
    for evt in prof.key_averages():
        if evt.device_type != want or getattr(evt, "is_user_annotation", False) or evt.key == "Context Sync":
            continue
        sec = (evt.self_device_time_total if cuda else evt.self_cpu_time_total) / 1e6
        if sec > 0:
            out.append((evt.key, sec))
    return out


def lines(profile: dict[str, Any], title: str, cuda: bool) -> list[str]:
    """A profile as markdown: ms a step by kind, then the costliest kernels."""
    what = "device kernel time" if cuda else "CPU operator self time"
    busy = f"; kernel time {100 * profile['busy']:.0f}% of the wall clock" if cuda else ""
    out = ["", f"**{title}: where a step goes** ({profile['steps']} profiled steps, {profile['wall_ms']} ms a step "
               f"under the profiler{busy}; {what})", "",
           "| kind | ms / step | share |", "|---|---|---|"]
    out += [f"| {k} | {v['ms']} | {100 * v['share']:.1f}% |" for k, v in profile["by_kind"].items()]
    out += ["", "| kernel | kind | ms / step | share |", "|---|---|---|---|"]
    out += [f"| `{t['name']}` | {t['kind']} | {t['ms']} | {100 * t['share']:.1f}% |" for t in profile["top"]]
    return out


class StepProfile:
    """An `on_step` hook for `pretrain`: once `after` steps of this call have run (default AFTER), profiles the next
    `steps`, then writes the breakdown to `out` (JSON) and calls `report` with a one-line summary. `pretrain` calls
    the hook right after a step's optimizer step, so the window holds whatever bookkeeping step `after` does
    (logging, validation, a checkpoint): pick an `after` off those steps. `cuda`: the run trains on a GPU (the hook
    sees the prefetcher's batches, which stay on the CPU, so it cannot tell).

    A call that stops sooner profiles nothing; `close()` (or leaving a `with` block) stops a profile left open. A
    profiler that fails (no CUPTI, say) is reported in one line and training goes on: a measurement never costs the
    run it measures."""

    def __init__(self, steps: int, out: str | Path, cuda: bool, after: int | None = None, report=print) -> None:
        after = AFTER if after is None else after
        if steps < 1 or after < 1:
            raise ValueError(f"profile: steps and after must be >= 1, got {steps} and {after}")
        self.steps, self.after, self.out, self.cuda, self.report = steps, after, Path(out), cuda, report
        self.first: int | None = None
        self.prof = None
        self.t0 = 0.0
        self.result: dict[str, Any] | None = None
        self.failed = False

    def _sync(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()

    def __enter__(self) -> StepProfile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop a profile still open (the call ended inside its window); nothing is written."""
        prof, self.prof = self.prof, None
        if prof is not None:
            try:
                prof.__exit__(None, None, None)
            except Exception:  # noqa: BLE001, S110 (a profile given up: nothing of it is read)
                pass

    def __call__(self, step: int, batch) -> None:
        if self.failed:
            return
        try:
            self._advance(step)
        except Exception as e:  # noqa: BLE001 (any profiler failure ends the profile, never the run)
            self.failed = True
            self.close()
            self.report(f"profile: gave up at step {step} ({type(e).__name__}: {e}); training goes on")

    def _advance(self, step: int) -> None:
        import torch

        if self.first is None:
            self.first = step
        done = step - self.first + 1  # steps this call has run, this one included
        if done == self.after and self.prof is None and self.result is None:
            self._sync()
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=activities)
            self.prof.__enter__()
            self.t0 = time.perf_counter()
        elif self.prof is not None and done == self.after + self.steps:
            self._sync()
            wall = time.perf_counter() - self.t0
            prof, self.prof = self.prof, None
            prof.__exit__(None, None, None)
            events = profiled_events(prof, self.cuda)
            if not events:  # a profiler without CUPTI records no kernels: say so rather than write an empty profile
                raise RuntimeError("no kernels recorded (on a GPU: is CUPTI installed?)")
            self.result = breakdown(events, self.steps, wall)
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_text(json.dumps({"first_step": step - self.steps + 1, **self.result}, indent=1))
            kinds = ", ".join(f"{k} {100 * v['share']:.0f}%" for k, v in self.result["by_kind"].items())
            busy = f", kernel time {100 * self.result['busy']:.0f}% of it" if self.cuda else ""
            self.report(f"profile of steps {step - self.steps + 1}-{step}: {self.result['wall_ms']:.1f} ms a step"
                        f"{busy}; {kinds} ({self.out})")


def after_for(warmup_steps: int, log_every: int) -> int:
    """Where a pretraining call's profile starts: past AFTER, past the step where a `fit_minutes` schedule is fitted
    (timed between log steps up to warmup's end: a profiler starting inside would slow the steps it times, and so
    shorten the schedule), and off a log step (whose bookkeeping would land in the window)."""
    after = max(AFTER, warmup_steps + 2 * log_every)
    return after + 1 if after % log_every == 0 else after


def for_run(cfg, steps: int, run_dir: str | Path, report=print):
    """The hook that profiles `steps` steps of a pretraining call under config `cfg` into RUN_DIR/profile.json, as a
    context that closes it; a context holding None where `steps` is 0."""
    from contextlib import nullcontext

    from testtime.core.distributed import pick_device

    if not steps:
        return nullcontext(None)
    return StepProfile(steps, Path(run_dir) / "profile.json", cuda=pick_device(cfg.device).startswith("cuda"),
                       after=after_for(cfg.warmup_steps, cfg.log_every), report=report)
