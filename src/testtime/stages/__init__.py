"""The stages a task passes through: the engine, TTT, prediction, voting, selection, the policy, the time budget."""
