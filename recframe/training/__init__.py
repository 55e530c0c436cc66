"""Training with Lightning, and the validation metrics it reports (metrics.py)."""
