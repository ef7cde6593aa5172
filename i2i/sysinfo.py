"""What machine a figure came from: written next to every measured number."""

from __future__ import annotations

import os
import platform

import torch


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str | int]:
    info: dict[str, str | int] = {
        "cpu": cpu_name(), "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "os": f"{platform.system()} {platform.release()}"}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def describe(info: dict[str, str | int] | None = None) -> str:
    info = info or machine()
    device = info.get("gpu") or f"{info['cpu']} ({info['cpu_count']} cores, CPU only)"
    return f"{device}; Python {info['python']}, torch {info['torch']}"
