"""Text few-shot tasks (BIG-Bench Hard style): tasks, prompts, TTT data, answers, reports, the run."""
