"""Whole runs: the run loop every task kind shares, the grid recipe, pretraining, the joint stage."""
