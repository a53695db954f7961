"""testtime: make neural models learn at test time (TTT for few-shot tasks such as ARC).

    import testtime

    solver = testtime.load()                            # the shipped model, loaded once
    result = solver.solve("arc1/eval/00576224")         # see testtime.api
    both = testtime.load_checkpoints(["ckpt-a", "ckpt-b"])   # several models, attempts combined: testtime.checkpoints

Importing testtime registers its grid model with transformers (model_type "testtime_grid"), so
`AutoModelForCausalLM.from_pretrained` reads the shipped checkpoint, as its model card says. The API
(`testtime.api`: the run pipeline, peft, the reports) is imported on first use of one of its names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import testtime.model.grid_model  # noqa: F401  (registers the grid model's classes with transformers)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from testtime.api import (
        DEFAULT_POLICY,
        POLICIES,
        RECIPES,
        ConfigError,
        EvalConfig,
        ModelError,
        Policy,
        Ranked,
        Recipe,
        Run,
        Solution,
        Solver,
        Task,
        TaskError,
        TooLongError,
        combine,
        evaluate,
        evaluate_checkpoints,
        load,
    )
    from testtime.checkpoints import Checkpoints, load_checkpoints

__all__ = ["DEFAULT_POLICY", "POLICIES", "RECIPES", "Checkpoints", "ConfigError", "EvalConfig", "ModelError", "Policy",
           "Ranked", "Recipe", "Run", "Solution", "Solver", "Task", "TaskError", "TooLongError", "__version__", "combine",
           "evaluate", "evaluate_checkpoints", "load", "load_checkpoints"]
_CHECKPOINTS = ("Checkpoints", "load_checkpoints")  # testtime.checkpoints, which builds on testtime.api


def __getattr__(name: str) -> Any:
    if name in _CHECKPOINTS:
        from testtime import checkpoints

        return getattr(checkpoints, name)
    if name in __all__:
        from testtime import api

        return getattr(api, name)
    raise AttributeError(f"module 'testtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
