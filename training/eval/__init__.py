"""Evaluation: VSI-Bench and MultiSPA scoring, per-task tables and charts."""
