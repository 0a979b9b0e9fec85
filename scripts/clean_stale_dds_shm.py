"""Remove Fast DDS shared-memory segments left in /dev/shm by killed processes.

    python scripts/clean_stale_dds_shm.py          # `make test` runs it before pytest

A participant killed with SIGKILL leaves its /dev/shm/fastdds_* segments behind; new participants
can then fail to match (seen: an action server never reported ready). Fast DDS also keeps port
segments that live participants share without always mapping them, so this removes anything
only when NO running process has any Fast DDS segment mapped or open (/proc/*/maps, /proc/*/fd):
with ROS running on the machine it does nothing.
"""
from __future__ import annotations

import os
from pathlib import Path

SHM = Path("/dev/shm")


def paths_in_use() -> set[str]:
    used: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            used.update(line.split(None, 5)[5].strip() for line in (proc / "maps").read_text().splitlines()
                        if "/dev/shm/" in line and len(line.split(None, 5)) == 6)
            used.update(os.readlink(fd) for fd in (proc / "fd").iterdir())
        except OSError:
            continue
    return used


def main() -> int:
    if not SHM.is_dir():
        return 0
    if any("fastdds_" in path for path in paths_in_use()):
        return 0  # a live participant exists: leave everything alone
    removed = 0
    for path in SHM.glob("*fastdds_*"):
        try:
            path.unlink()
            removed += 1
        except OSError:
            pass
    if removed:
        print(f"clean_stale_dds_shm: removed {removed} stale Fast DDS segment(s) from {SHM}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
