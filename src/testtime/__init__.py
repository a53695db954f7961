"""testtime: make neural models learn at test time (TTT for few-shot tasks such as ARC).

Importing testtime registers its grid model with transformers (model_type "testtime_grid"), so
`AutoModelForCausalLM.from_pretrained` reads the shipped checkpoint, as its model card says.
"""

import testtime.model.grid_model  # noqa: F401  (registers the grid model's classes with transformers)

__version__ = "0.1.0"
