#!/usr/bin/env bash
# The main job over ROS: start spatial_mllm_node (embedded tiny model, config/cpu.yaml), replay a
# rosbag2 into it, ask a question through the ~/ask service and the ~/ask action, print both JSON
# answers, stop the node.
#   bash scripts/demo_ros.sh                      # the shipped synthetic bag and its question
#   bash scripts/demo_ros.sh BAG "QUESTION" [--options A B ...]
# Topic names follow the shipped bag; for another bag set IMAGE_TOPIC, DEPTH_TOPIC,
# CAMERA_INFO_TOPIC, ODOM_TOPIC (empty = not used).
set -euo pipefail
cd "$(dirname "$0")/.."
BAG=${1:-tests/data/bags/synthetic_room}
QUESTION=${2:-How many red boxes are in the room?}
shift $(( $# > 2 ? 2 : $# ))
IMAGE_TOPIC=${IMAGE_TOPIC:-/camera/image_raw}
DEPTH_TOPIC=${DEPTH_TOPIC-/camera/depth/image_raw}
CAMERA_INFO_TOPIC=${CAMERA_INFO_TOPIC-/camera/camera_info}
ODOM_TOPIC=${ODOM_TOPIC-/odom}
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( ($$ % 100) + 100 ))}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
BIN=.venv/bin
[ -d "$BAG" ] || { echo "demo_ros: no bag at $BAG" >&2; exit 2; }

log=$(mktemp -t spatial_mllm_node.XXXXXX.log)
"$BIN/spatial_mllm_node" --ros-args --params-file config/cpu.yaml \
  -p image_topic:="$IMAGE_TOPIC" -p depth_topic:="$DEPTH_TOPIC" -p camera_info_topic:="$CAMERA_INFO_TOPIC" \
  -p odom_topic:="$ODOM_TOPIC" -p odom_child_is_optical:=true -p qos_reliability:=reliable \
  -p keyframe_min_interval_s:=0.0 >"$log" 2>&1 &
node_pid=$!
trap 'kill -INT $node_pid 2>/dev/null; wait $node_pid 2>/dev/null || true' EXIT

for _ in $(seq 1 240); do
  grep -q "activated" "$log" && break
  kill -0 $node_pid 2>/dev/null || { echo "demo_ros: node exited; log: $log" >&2; cat "$log" >&2; exit 1; }
  sleep 0.5
done
grep -q "activated" "$log" || { echo "demo_ros: node did not activate in 120 s; log: $log" >&2; exit 1; }
echo "demo_ros: node active (log $log); replaying $BAG" >&2
"$BIN/spatial-mllm-bag" replay "$BAG" --rate 4 --wait-for-subscribers 10 >&2
sleep 1  # let the geometry worker finish the last frames
"$BIN/python" -m ros2_spatial_mllm.ros.ask_client "$QUESTION" --via both --node /spatial_mllm_node \
  --sampling space_aware --timeout 120 "$@"
