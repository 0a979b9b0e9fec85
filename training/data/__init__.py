"""Spatial QA data engine: real (VSI-Bench meta_info) and procedural scenes, rendering,
question generation with ground truth, conformance against published answers, datasets.

Entry point: ``spatial-mllm-data`` (training/data/cli.py).
"""
