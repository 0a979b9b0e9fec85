# The two commands a new engineer needs (each sets up .venv by itself, idempotently):
#   make demo   - the main job: the embedded tiny Spatial-MLLM answers a question about the bundled clip
#   make test   - the test suite (real rclpy nodes over Fast DDS, tiny-model forward passes)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEMO_CLIP ?= ros2_spatial_mllm/assets/demo/room.mp4
QUESTION ?= How many chairs are in this room?

.PHONY: setup demo test test-slow bench

setup:
	@bash scripts/setup.sh

demo: setup
	@$(VENV)/bin/spatial-mllm ask --video $(DEMO_CLIP) --question "$(QUESTION)" --sampling space_aware --num-frames 16

test: setup
	@OMP_NUM_THREADS=2 $(VENV)/bin/pytest -m "not slow" -q

test-slow: setup
	@$(VENV)/bin/pytest -m slow -q

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
