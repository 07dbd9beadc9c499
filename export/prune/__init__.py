"""Structural pruning: importance, the pruned model, recovery by distillation, the pruning job and the sweep
(``python -m export.prune``)."""
