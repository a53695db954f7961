"""testtime: make neural models learn at test time (TTT for few-shot tasks such as ARC)."""

__version__ = "0.1.0"
