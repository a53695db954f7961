"""Conventions every layer shares: safe JSON reading, typed configs, run-folder records, torchrun."""
