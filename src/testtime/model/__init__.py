"""The base model: its folder, the grid-aware Llama, loading any HF causal LM, trainers' shared parts, batched adapters."""
