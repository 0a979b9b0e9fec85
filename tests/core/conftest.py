"""Fixtures shared by the core tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def mllm():
    """The embedded tiny model, loaded once per test module (each module may change its decode or
    numeric mode; a fresh instance per module keeps those changes from leaking)."""
    from ros2_spatial_mllm.inference import SpatialMLLM

    model = SpatialMLLM.load()
    yield model
    model.close()
