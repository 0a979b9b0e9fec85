"""ROS message builders that let a person see what an answer used (imports ROS message packages).

    frames.py : chosen frames -> sensor_msgs/Image | CompressedImage, each with its ORIGINAL
                header stamp and frame_id (so RViz/Foxglove line them up with the camera stream)
    markers.py: voxel coverage -> visualization_msgs/MarkerArray (CUBE_LISTs) or
                sensor_msgs/PointCloud2 (x, y, z, rgb); camera trajectory -> MarkerArray
                (LINE_STRIP path + an ARROW per chosen camera)
"""
from ros2_spatial_mllm.viz.frames import (chosen_frame_messages, frame_to_compressed_msg, frame_to_image_msg,
                                          ns_to_stamp)
from ros2_spatial_mllm.viz.markers import (coverage_markers, points_to_pointcloud2, trajectory_markers,
                                           voxel_centers, voxel_cloud)

__all__ = ["chosen_frame_messages", "frame_to_compressed_msg", "frame_to_image_msg", "ns_to_stamp",
           "coverage_markers", "points_to_pointcloud2", "trajectory_markers", "voxel_centers", "voxel_cloud"]
