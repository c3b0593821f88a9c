"""cloudmeta's benchmarks, side by side with their baselines: ``python -m bench`` (see README)."""
