"""Sweeps: many independent tasks, each keyed by a content hash of its inputs and recorded in one file, run on
this process, local worker processes or Ray; one driver per command that runs one (atlas, leakage, solve
--instances, design --targets)."""
