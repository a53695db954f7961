"""CUDA-graph capture shared by the stages that replay a step: the decode step (`engine`) and the TTT step
(`ttt_graph`). A graph asks for a real warm-up step on a side stream first, and a capture that fails (a host sync,
an op graphs do not allow) must leave the process as it was, on its own stream, with a warning that says why.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


def warm_up(step: Callable[[], None], device: torch.device) -> None:
    """A real step on a side stream, the warm-up CUDA graphs ask for: it initializes what the graph
    will touch (workspaces, lazily built buffers) before the capture."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream(device).wait_stream(side)


def capture_graph(step: Callable[[], None], device: torch.device, what: str, instead: str):
    """`step` captured as a CUDA graph on `device` (on a stream of that device), or None if it cannot be: a warning
    then says `what` failed, why, and what runs `instead`."""
    graph = torch.cuda.CUDAGraph()
    before = torch.cuda.current_stream(device)
    with torch.cuda.device(device):
        torch.cuda.synchronize(device)
        try:
            with torch.cuda.graph(graph, stream=torch.cuda.Stream(device)):
                step()
        except Exception as e:  # a host sync inside the model's forward, an op graphs do not allow...
            # A spoiled capture raises again on leaving the capture, before it gives the stream back.
            torch.cuda.set_stream(before)
            cause = f"{type(e).__name__}: {e}" + (f" (after {type(e.__context__).__name__}: {e.__context__})"
                                                   if e.__context__ is not None else "")
            warnings.warn(f"{what} not capturable as a CUDA graph ({cause}); {instead}", stacklevel=3)
            torch.cuda.synchronize(device)
            return None
    return graph
