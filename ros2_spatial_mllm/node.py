"""`spatial_mllm_node`: a thin ROS 2 lifecycle node around the spatial-query core.

    spatial_mllm_node --ros-args --params-file config/cpu.yaml -p autostart:=true \
        -r image:=/camera/color/image_raw
    ros2 run ros2_spatial_mllm spatial_mllm_node --ros-args -p autostart:=true   # on a robot

Lifecycle: configure reads + validates the parameters (`ros/params.py: NodeConfig`, mirrored by
config/*.yaml), builds the FrameBuffer, QueryEngine and GeometryWorker and subscribes to the
inputs; activate loads the model (embedded tiny preset by default, or `model_path`; with backend
onnxruntime/tensorrt the export is checked and probed against the weights first, see
engine_checks.load_with_verified_backend) and starts buffering frames; deactivate frees the model;
cleanup drops everything. `autostart:=true` configures and activates at start-up.
Interfaces (all relative names, remap freely):
    sub  image | image/compressed (sensor_msgs/Image | CompressedImage; sensor-data QoS default)
    sub  depth_topic, camera_info_topic, odom_topic (optional, for sensor geometry)
    sub  /tf, /tf_static tf2_msgs/TFMessage (only with tf_world_frame set: camera poses from TF)
    srv  ~/ask     ros2_spatial_mllm/srv/AskSpatial      (quick questions)
    act  ~/ask     ros2_spatial_mllm/action/AskSpatial   (feedback per token, cancel)
    pub  ~/answers ros2_spatial_mllm/msg/SpatialAnswer   (every query outcome)
    pub  /diagnostics diagnostic_msgs/DiagnosticArray    (diagnostics_period_s)
Service and action callbacks run on a ReentrantCallbackGroup under a MultiThreadedExecutor;
the QueryEngine serialises model runs, answers BUSY past its queue and TIMEOUT past deadlines.
Every input subscription has its own mutually exclusive callback group, so one topic's backlog
(a burst) never starves the others; FrameIntake pairs frames with depth/pose by stamp.
"""
from __future__ import annotations

import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import (HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ros2_spatial_mllm.action import AskSpatial as AskSpatialAction
from ros2_spatial_mllm.buffer import FrameBuffer
from ros2_spatial_mllm.msg import SpatialAnswer
from ros2_spatial_mllm.query_engine import ErrorCode, QueryEngine, QueryResponse
from ros2_spatial_mllm.ros import convert
from ros2_spatial_mllm.ros.answer_views import AnswerViews
from ros2_spatial_mllm.ros.process import (CallbackErrors, enable_stack_dumps, limit_heap_growth,
                                          spin_until_shutdown)
from ros2_spatial_mllm.ros.diagnostics import age_since, build_diagnostics, model_diagnostics
from ros2_spatial_mllm.ros.intake import FrameIntake
from ros2_spatial_mllm.ros.params import NodeConfig
from ros2_spatial_mllm.engine_checks import load_with_verified_backend
from ros2_spatial_mllm.safety import enforce_offline
from ros2_spatial_mllm.ros.tf_input import TF_QOS, TF_STATIC_QOS, import_tf_message
from ros2_spatial_mllm.srv import AskSpatial

NODE_NAME = "spatial_mllm_node"
REQUEST_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)


class SpatialMllmNode(LifecycleNode):
    """Lifecycle node: parameters -> core objects -> ROS interfaces (see module docstring)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for name, default in NodeConfig.defaults().items():
            self.declare_parameter(name, default, _descriptor(name))
        self.config: NodeConfig | None = None
        self.buffer: FrameBuffer | None = None
        self.engine: QueryEngine | None = None
        self.geometry = None
        self.intake: FrameIntake | None = None
        self._subscriptions_in: list = []
        self._state_label = "unconfigured"
        self._model_info: dict = {}
        self._identity: dict = {}       # {"config_hash", "revision"} of the loaded model; {} when none
        self._lock = threading.Lock()
        self.callback_errors = CallbackErrors()
        self._query_group = ReentrantCallbackGroup()
        # Requests must reach the QueryEngine to be answered BUSY: the default service QoS (keep
        # last 10) silently drops a burst of 20 clients' requests before any callback runs.
        self._ask_service = self.create_service(AskSpatial, "~/ask", self._on_ask_service,
                                                qos_profile=REQUEST_QOS, callback_group=self._query_group)
        self._ask_action = ActionServer(
            self, AskSpatialAction, "~/ask", execute_callback=self._on_ask_action,
            goal_callback=lambda _goal: GoalResponse.ACCEPT,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT,
            goal_service_qos_profile=REQUEST_QOS, result_service_qos_profile=REQUEST_QOS,
            cancel_service_qos_profile=REQUEST_QOS, callback_group=self._query_group)
        self._views = AnswerViews(self)
        self._answers_pub = self.create_publisher(SpatialAnswer, "~/answers", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = float(self.get_parameter("diagnostics_period_s").value)
        # steady clock: with use_sim_time a paused or looping bag (/clock frozen or jumping back)
        # must not stop /diagnostics; their header stamp is still the node's (simulated) time
        self._diag_timer = self.create_timer(max(0.05, period), self._publish_diagnostics,
                                             callback_group=MutuallyExclusiveCallbackGroup(),
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info("created (unconfigured); services ~/ask, action ~/ask")

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            values = {n: self.get_parameter(n).value for n in NodeConfig.parameter_names()}
            config = NodeConfig.from_dict(values)
        except ValueError as exc:
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        tf_message = None
        if config.tf_world_frame.strip():
            tf_message = import_tf_message()
            if tf_message is None:
                self.get_logger().error(
                    "configure failed: tf_world_frame is set but tf2_msgs is not importable "
                    "(on a dev machine run scripts/build_interfaces.sh, which builds a minimal "
                    "tf2_msgs; on a robot install ros-<distro>-tf2-msgs)")
                return TransitionCallbackReturn.FAILURE
        self.config = config
        self.buffer = config.frame_buffer()
        # loader: SpatialMLLM.load + (onnxruntime/tensorrt) export checks and a probe against the
        # torch weights, so a corrupt or mismatched engine fails activate instead of being used
        self.engine = QueryEngine(self.buffer, config.engine_config(), loader=load_with_verified_backend)
        self.intake = FrameIntake(self.buffer, self.get_logger(), config.sync_tolerance_s,
                                  config.odom_child_is_optical, expect_depth=bool(config.depth_topic),
                                  expect_pose=bool(config.odom_topic),
                                  expect_info=bool(config.camera_info_topic),
                                  depth_wait_s=config.sync_max_wait_s, max_pending=config.sync_queue_size,
                                  tf_world_frame=config.tf_world_frame, camera_frame=config.camera_frame,
                                  tf_cache_s=config.tf_cache_s)
        if config.geometry_source != "none":
            from ros2_spatial_mllm.geometry_worker import GeometryWorker
            use_sensor = config.geometry_source in ("auto", "sensor")
            late = (use_sensor and config.sync_late_pairing_s > 0 and bool(config.depth_topic)
                    and bool(config.camera_info_topic) and bool(config.odom_topic or tf_message))
            self.geometry = GeometryWorker(
                self.buffer, model_provider=lambda: self.engine.model if self.engine else None,
                model_lock=self.engine.model_lock, use_sensor=use_sensor,
                use_model=config.geometry_source in ("auto", "model"),
                sensor_lookup=self.intake.sensor_lookup if late else None,
                sensor_wait_s=config.sync_late_pairing_s)
            self.engine.geometry = self.geometry
        self._create_input_subscriptions(config, tf_message)
        self._state_label = "inactive"
        self.get_logger().info(
            f"configured: input {config.image_transport} '{config.subscribed_image_topic()}' "
            f"({config.qos_reliability}, depth {config.qos_depth}), buffer "
            f"{config.buffer_max_frames} frames / {config.buffer_max_mb:g} MiB, geometry "
            f"{config.geometry_source}, model {config.model_path or config.model_preset} on {config.device}"
            + (f", poses from TF {config.tf_world_frame} <- {config.camera_frame or '<image frame_id>'}"
               if tf_message is not None else ""))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        config, started = self.config, time.monotonic()
        self._state_label = "activating"
        ok = self.engine.load(model=config.model_path or None, preset=config.model_preset,
                              device=config.resolved_device(),
                              dtype=None if config.dtype == "auto" else config.dtype,
                              backend=config.backend, backend_options=config.backend_options())
        if not ok:
            self._model_info, self._identity = {"error": self.engine.state_error}, {}
            self._state_label = "inactive"
            self.get_logger().error(f"activate failed: model did not load: {self.engine.state_error}")
            return TransitionCallbackReturn.FAILURE
        info = getattr(self.engine.model, "info", {}) or {}
        self._model_info = model_diagnostics(self.engine.model, config.resolved_device())
        self._identity = {k: str(info.get(k, "")) for k in ("config_hash", "revision")}
        if self.geometry is not None:
            self.geometry.notify_model_ready()
        self.intake.enabled = True
        self._state_label = "active"
        self.get_logger().info(f"activated: model {info.get('preset', config.model_preset)} "
                               f"loaded in {time.monotonic() - started:.2f} s")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.intake is not None:
            self.intake.enabled = False
        if self.engine is not None:
            self.engine.unload()
        self._identity = {}
        self._state_label = "inactive"
        self.get_logger().info("deactivated: model freed, input paused")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self._state_label = "unconfigured"
        self.get_logger().info("cleaned up: buffer and subscriptions dropped")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self._state_label = "finalized"
        self.get_logger().info("shut down")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        self._state_label = "unconfigured"
        self.get_logger().error("error processing: core torn down, back to unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        if self.intake is not None:
            self.intake.enabled = False
        for sub in self._subscriptions_in:
            self.destroy_subscription(sub)
        self._subscriptions_in = []
        if self.geometry is not None:
            self.geometry.stop()
            self.geometry = None
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
        self.buffer, self.intake, self._model_info, self._identity = None, None, {}, {}

    # ------------------------------------------------------------------ inputs
    def _create_input_subscriptions(self, config: NodeConfig, tf_message=None) -> None:
        """One mutually exclusive group per subscription: each topic's callbacks stay in order,
        topics run side by side (a burst on one topic does not starve the others)."""
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=config.qos_depth,
            reliability=(ReliabilityPolicy.BEST_EFFORT if config.qos_reliability == "best_effort"
                         else ReliabilityPolicy.RELIABLE),
            durability=qos_profile_sensor_data.durability)
        image_type = CompressedImage if config.image_transport == "compressed" else Image
        wanted = [(image_type, config.subscribed_image_topic(), self.intake.on_image, qos)]
        if config.depth_topic:
            wanted.append((Image, config.depth_topic, self.intake.on_depth, qos))
        if config.camera_info_topic:
            wanted.append((CameraInfo, config.camera_info_topic, self.intake.on_camera_info, qos))
        if config.odom_topic:
            wanted.append((Odometry, config.odom_topic, self.intake.on_odometry, QoSProfile(depth=50)))
        if tf_message is not None:
            wanted.append((tf_message, "/tf", self.intake.on_tf, TF_QOS))
            wanted.append((tf_message, "/tf_static", self.intake.on_tf_static, TF_STATIC_QOS))
        self._subscriptions_in = [
            self.create_subscription(msg_type, topic, callback, sub_qos,
                                     callback_group=MutuallyExclusiveCallbackGroup())
            for msg_type, topic, callback, sub_qos in wanted]

    # ------------------------------------------------------------------ queries
    def _not_ready(self) -> QueryResponse:
        state = self.engine.state.value if self.engine else "unloaded"
        return QueryResponse(ErrorCode.MODEL_NOT_READY,
                             f"node is {self._state_label} (model {state}); activate it first")

    def _on_ask_service(self, request: AskSpatial.Request, response: AskSpatial.Response):
        received = self.get_clock().now()
        try:
            engine = self.engine
            outcome = (engine.ask(convert.to_query_request(request))
                       if engine is not None and self._state_label == "active" else self._not_ready())
        except Exception as exc:  # noqa: BLE001 - a query must never kill the node
            self.get_logger().error(f"ask (service) failed: {type(exc).__name__}: {exc}")
            outcome = QueryResponse(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        identity = self._identity
        self._finish_query(request, outcome, "service", received, identity)
        return convert.fill_identity(convert.fill_outcome(response, outcome), identity)

    def _on_ask_action(self, goal_handle):
        received = self.get_clock().now()
        goal = goal_handle.request
        feedback_lock = threading.Lock()
        progress = {"tokens": 0, "stage": "queued"}
        max_tokens = goal.max_new_tokens or (self.config.max_new_tokens if self.config else 1)

        def send(stage: str, text: str = "") -> None:
            with feedback_lock:
                progress["stage"] = stage
                if text:
                    progress["tokens"] += 1
                fb = AskSpatialAction.Feedback(stage=stage, new_text=text, num_tokens=progress["tokens"],
                                               progress=min(1.0, progress["tokens"] / max(1, max_tokens)))
            try:
                goal_handle.publish_feedback(fb)
            except Exception:  # noqa: BLE001 - goal finished meanwhile
                pass

        engine = self.engine
        try:
            if engine is None or self._state_label != "active":
                outcome = self._not_ready()
            else:
                handle = engine.submit(convert.to_query_request(goal),
                                       on_token=lambda text: send("decoding", text),
                                       on_stage=lambda stage: send(stage))
                outcome = None
                while outcome is None:
                    if goal_handle.is_cancel_requested:
                        handle.cancel()
                    outcome = handle.result(timeout=0.02)
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"ask (action) failed: {type(exc).__name__}: {exc}")
            outcome = QueryResponse(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        identity = self._identity
        result = convert.fill_identity(convert.fill_outcome(AskSpatialAction.Result(), outcome), identity)
        if outcome.code == ErrorCode.CANCELLED and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        self._finish_query(goal, outcome, "action", received, identity)
        return result

    def _finish_query(self, request, outcome: QueryResponse, interface: str, received,
                      identity: dict | None = None) -> None:
        """Log one line, publish the answer views and the ~/answers message (with the identity
        of the model that answered: `identity` = {"config_hash", "revision"}, {} when none).
        Never raises: logging or publishing must not kill the node or lose the reply."""
        try:
            line = convert.outcome_log_line(outcome, interface)
            # rclpy fixes a call site's severity: one call site per level
            if outcome.success:
                self.get_logger().info(line)
            else:
                self.get_logger().warning(line)
            if outcome.success and self.config is not None and self.config.publish_views:
                world = self.config.views_frame_id or self.config.tf_world_frame or "odom"
                self._views.submit(self.buffer, self.geometry, outcome.frame_stamps_ns, world,
                                   received.nanoseconds)
            if not (self.config.publish_answers if self.config else True):
                return
            msg = convert.fill_outcome(SpatialAnswer(), outcome)
            convert.fill_request_echo(msg, request, outcome.sampling, interface)
            convert.fill_identity(msg, identity)
            msg.header.stamp = received.to_msg()
            msg.header.frame_id = self.intake.last_frame_id if self.intake else ""
            self._answers_pub.publish(msg)
        except Exception as exc:  # noqa: BLE001 - bookkeeping must not kill the node
            self.get_logger().error(f"ask[{interface}] bookkeeping failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        try:
            if self.intake is not None:
                self.intake.flush_stale()
            geometry = self.geometry.stats() if self.geometry is not None else None
            array = build_diagnostics(
                self.get_fully_qualified_name(), self.get_clock().now().to_msg(), self._state_label,
                self.buffer.stats() if self.buffer is not None else None,
                self.intake.error_counts() if self.intake is not None else {},
                {k: v for k, v in (geometry or {}).items() if isinstance(v, (int, float))} or None,
                self.engine.stats() if self.engine is not None else None,
                {**self._model_info, "callback_errors": self.callback_errors.count},
                age_since(self.intake.last_frame_monotonic) if self.intake is not None else None)
            self._diag_pub.publish(array)
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"diagnostics failed: {exc}", throttle_duration_sec=10.0)


def _descriptor(name: str):
    from rcl_interfaces.msg import ParameterDescriptor
    return ParameterDescriptor(description=NodeConfig.describe(name))


def main(argv: list[str] | None = None) -> int:
    """Entry point `spatial_mllm_node` (console script and `ros2 run`)."""
    enforce_offline()            # the node never reaches a model hub
    limit_heap_growth()          # long runs: return big frame buffers to the OS (see below)
    enable_stack_dumps()         # kill -USR1 <pid>: all thread stacks into the log
    rclpy.init(args=sys.argv if argv is None else argv)
    node = None
    try:
        node = SpatialMllmNode()
        executor = MultiThreadedExecutor(
            num_threads=int(node.get_parameter("query_queue_size").value) + 8)
        executor.add_node(node)
        if node.get_parameter("autostart").value:
            if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                node.trigger_activate()
        spin_until_shutdown(executor, node.get_logger(), node.callback_errors, rclpy.ok)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # noqa: BLE001 - one line, no traceback (CLI rule)
        print(f"spatial_mllm_node: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        try:
            if node is not None:
                node._teardown()
                node._views.close()
                node.destroy_node()
            rclpy.try_shutdown()
        except KeyboardInterrupt:   # a second Ctrl-C while shutting down: quit without a traceback
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
