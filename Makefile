# The two commands a new engineer needs (each sets up .venv by itself, idempotently):
#   make demo   - the main job: the embedded tiny Spatial-MLLM answers a question about the bundled clip
#   make test   - the test suite (real rclpy nodes over Fast DDS, tiny-model forward passes)
#   make demo-ros [BAG=dir] - the same over ROS 2: node up, bag replayed, service + action asked
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEMO_CLIP ?= ros2_spatial_mllm/assets/demo/room.mp4
QUESTION ?= How many chairs are in this room?

BAG ?= tests/data/bags/synthetic_room
ROS_QUESTION ?= How many red boxes are in the room?

.PHONY: setup demo demo-ros test test-slow bench

setup:
	@bash scripts/setup.sh

demo: setup
	@$(VENV)/bin/spatial-mllm ask --video $(DEMO_CLIP) --question "$(QUESTION)" --sampling space_aware --num-frames 8

demo-ros: setup
	@bash scripts/demo_ros.sh "$(BAG)" "$(ROS_QUESTION)"

test: setup
	@$(PY) scripts/clean_stale_dds_shm.py
	@OMP_NUM_THREADS=2 $(VENV)/bin/pytest -m "not slow" -q

test-slow: setup
	@$(VENV)/bin/pytest -m slow -q

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
