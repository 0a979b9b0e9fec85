"""The robot install path (what `colcon build` runs): the full CMakeLists.txt, not the dev
interfaces-only build, configured, built and installed with the PyPI wheels into a temp prefix.
Checks the layout `ros2 run` / `ros2 launch` rely on and that the merged Python package imports."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)


@pytest.mark.slow
def test_full_cmake_install_layout(tmp_path):
    fix = ROOT / "build" / "interfaces" / "fix_wheel_include_dirs.cmake"
    assert fix.is_file(), "run scripts/build_interfaces.sh first"
    build, prefix = tmp_path / "build", tmp_path / "install"
    env = dict(os.environ, AMENT_PREFIX_PATH=str(VENV), PATH=f"{VENV / 'bin'}:{os.environ['PATH']}")
    steps = [
        ["cmake", "-S", str(ROOT), "-B", str(build), f"-DCMAKE_INSTALL_PREFIX={prefix}",
         f"-DCMAKE_PREFIX_PATH={VENV}", f"-DCMAKE_PROJECT_INCLUDE={fix}", "-DBUILD_TESTING=OFF",
         f"-DPython3_EXECUTABLE={sys.executable}", "-DPython3_FIND_VIRTUALENV=ONLY"],
        ["cmake", "--build", str(build), "-j", "2"],
        ["cmake", "--install", str(build)],
    ]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert os.access(prefix / "lib" / "ros2_spatial_mllm" / "spatial_mllm_node", os.X_OK)
    share = prefix / "share" / "ros2_spatial_mllm"
    for name in ("package.xml", "config/cpu.yaml", "config/jetson_orin.yaml", "config/desktop_gpu.yaml",
                 "launch/spatial_mllm.launch.py", "launch/spatial_mllm_jetson.launch.py", "srv/AskSpatial.srv"):
        assert (share / name).is_file(), name
    site = prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
            "if type(f).__name__ != '_GeneratedInterfacesFinder'];"
            "import ros2_spatial_mllm.node as n, ros2_spatial_mllm.srv as s;"
            "from ros2_spatial_mllm.srv import AskSpatial; print(n.__file__); print(s.__file__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(site)), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert all(line.startswith(str(site)) for line in out.stdout.split()), out.stdout
