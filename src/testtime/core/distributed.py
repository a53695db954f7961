"""Running under `torchrun`: who am I (rank, world), the process group, and an even split of the work.

Every stage runs unchanged with or without torchrun. Without it (WORLD_SIZE unset or 1) nothing here
creates a process group and every helper is a no-op, so the single-process path stays exactly as it is.

    dist = init()                         # reads RANK / WORLD_SIZE / LOCAL_RANK
    mine = shard(tasks, dist.world, dist.rank, cost=task_cost)
    ...
    barrier(); if dist.is_main: merge()
"""

from __future__ import annotations

import heapq
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from testtime.core.config import ConfigError

T = TypeVar("T")

# A rank may wait at a barrier for the slowest rank to finish its whole shard (hours on a big evaluation).
TIMEOUT_ENV = "TESTTIME_DIST_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 24 * 60


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when several processes cooperate (and a process group exists after `init`)."""
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def from_env() -> Dist:
    """Rank and world size as torchrun sets them (RANK, WORLD_SIZE, LOCAL_RANK); 0/1/0 otherwise."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return Dist(rank, world, local)


def init() -> Dist:
    """Join the process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU); idempotent."""
    d = from_env()
    if not d.enabled:
        return d
    import torch
    import torch.distributed as tdist

    if not tdist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(d.local_rank)
        minutes = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_MINUTES))
        tdist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(minutes=minutes))
    return d


def initialized() -> bool:
    """Whether this process already belongs to a process group (one `init` made, or its caller's)."""
    import torch.distributed as tdist

    return tdist.is_available() and tdist.is_initialized()


def pick_device(requested: str | None = None) -> str:
    """The device of a run: `requested`, where None or "auto" mean cuda when available, else cpu.

    The one check of a device a user names: anything but auto, cpu, cuda or cuda:N, or a GPU that is not
    there, is a one-line ConfigError (torch would fail later, and elsewhere, with a misleading message).
    """
    import torch

    if requested is None or requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    m = re.fullmatch(r"cpu|cuda(?::(\d{1,4}))?", requested) if isinstance(requested, str) else None
    if m is None:
        raise ConfigError(f"device {requested!r}: unknown (use auto, cpu, cuda or cuda:N)")
    if requested.startswith("cuda"):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ConfigError(f"device {requested!r}: no CUDA GPU is available (use cpu or auto)")
        if m[1] is not None and int(m[1]) >= n:
            raise ConfigError(f"device {requested!r}: this machine has {n} CUDA GPU(s), cuda:0 to cuda:{n - 1}")
    return requested


def device(d: Dist, requested: str | None = None) -> str:
    """The device this rank uses: cuda:LOCAL_RANK under torchrun, else `requested` (see `pick_device`)."""
    name = pick_device(requested)
    if d.enabled and name == "cuda":
        return f"cuda:{d.local_rank}"
    return name


def barrier(d: Dist) -> None:
    if not d.enabled:
        return
    import torch
    import torch.distributed as tdist

    if tdist.get_backend() == "nccl":
        tdist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        tdist.barrier()


def broadcast(d: Dist, obj: T) -> T:
    """Rank 0's value of `obj` on every rank (a collective: every rank must call it)."""
    if not d.enabled:
        return obj
    import torch.distributed as tdist

    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(d: Dist, obj: T) -> list[T]:
    """Every rank's `obj`, in rank order (a collective)."""
    if not d.enabled:
        return [obj]
    import torch.distributed as tdist

    out: list = [None] * d.world
    tdist.all_gather_object(out, obj)
    return out


def cleanup(d: Dist) -> None:
    if not d.enabled:
        return
    import torch.distributed as tdist

    if tdist.is_initialized():
        tdist.destroy_process_group()


def shard(items: Sequence[T], world: int, rank: int, cost: Callable[[T], float] = lambda _: 1.0) -> list[T]:
    """This rank's share of `items`: greedy longest-processing-time balance, deterministic on every rank.

    Items go, most expensive first (ties by position), to the least loaded rank (ties by rank). Each item
    lands on exactly one rank and the largest load exceeds the ideal (total / world) by at most the largest
    item. The share keeps the input order.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard: rank {rank} outside a world of {world}")
    costs = [float(cost(x)) for x in items]
    order = sorted(range(len(items)), key=lambda i: (-costs[i], i))
    heap = [(0.0, r) for r in range(world)]
    owner = [0] * len(items)
    for i in order:
        load, r = heapq.heappop(heap)
        owner[i] = r
        heapq.heappush(heap, (load + costs[i], r))
    return [x for i, x in enumerate(items) if owner[i] == rank]
