"""rosbag2 tools (``spatial-mllm-bag``): synthetic bags with known answers (``io``, ``synthetic``,
``procedural``), replay into a ROS graph (``replay``, rclpy) and answer recording (``record``,
rclpy). Only ``replay`` and ``record`` import rclpy, lazily."""
