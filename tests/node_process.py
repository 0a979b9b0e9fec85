"""`spatial_mllm_node` as a child process, shared by tests/node, tests/reliability and
benchmarks/bench_soak.py (each puts tests/ on sys.path)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NODE_EXE = Path(sys.executable).parent / "spatial_mllm_node"


def param_arg(value) -> str:
    """A ROS parameter value as `-p name:=value` text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class NodeProcess:
    """The console script `spatial_mllm_node` (or `python -m ros2_spatial_mllm.node` when the
    script is not installed) with its output in `log_path`."""

    def __init__(self, name: str, params: dict, log_path: Path, params_file: str | None = None,
                 extra_args: list[str] | None = None, env: dict | None = None) -> None:
        self.name, self.log_path = name, Path(log_path)
        cmd = ([str(NODE_EXE)] if NODE_EXE.exists() else [sys.executable, "-m", "ros2_spatial_mllm.node"])
        cmd += ["--ros-args", "-r", f"__node:={name}"]
        if params_file:
            cmd += ["--params-file", str(params_file)]
        for key, value in params.items():
            cmd += ["-p", f"{key}:={param_arg(value)}"]
        cmd += list(extra_args or [])
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env=dict(os.environ) if env is None else env)

    @property
    def fqn(self) -> str:
        return f"/{self.name}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT (the node's clean shutdown), then SIGKILL after `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode
