"""manifest.json: what an export directory holds and how far each artifact was checked.

    {"format": "i2i-export", "format_version": 2, "model", "config",
     "checkpoint": {"file", "sha256", "step"},
     "batch": {"min", "opt", "max"}, "size", "size_multiple", "opset", "versions", "created",
     "signatures": {"default": {"method": "forward", "inputs": [TensorSpec dicts],
                                "outputs": [...],
                                "artifacts": {"onnx" | "onnx_fp16" | "aoti" | "tensorrt" |
                                              "triton": {"file", "precision", "sha256",
                                                         "parity", "passed", ...}}},
                    "masked": {...}, ...},
     "parity_failures": [...]}                     (only when an artifact missed its threshold)

Every signature of the model has the same layout; its files are model.onnx, model.fp16.onnx,
model.pt2, model.plan and triton/<model>/ for `default`, model.<signature>.onnx, ... and
triton/<model>_<signature>/ for the others. Engines read it (below export and runtime, both
use it); format 1 (before signatures) is refused with a request to re-export.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path

from .atomic import write_text
from .models.checkpoint import library_versions
from .models.spec import ModelSpec, signatures_from_dict

FORMAT = "i2i-export"
FORMAT_VERSION = 2
DEFAULT = "default"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    versions = library_versions()
    for package in ("onnx", "onnxruntime", "onnxscript", "onnxconverter-common", "tensorrt"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def stem(signature: str) -> str:
    """The file stem of a signature's artifacts: model, model.masked, ..."""
    return "model" if signature == DEFAULT else f"model.{signature}"


def triton_name(model: str, signature: str) -> str:
    """The Triton model folder of a signature: <model> or <model>_<signature>."""
    return model if signature == DEFAULT else f"{model}_{signature}"


def write_manifest(path: Path, manifest: dict) -> Path:
    """Atomic write, so a reader never sees half a manifest."""
    return write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no export manifest at {path}; run i2i-export first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not an i2i export manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path} is an i2i export of format {version}; this i2i reads format "
                         f"{FORMAT_VERSION} (signatures): re-export it with i2i-export "
                         f"--checkpoint {manifest.get('checkpoint', {}).get('file', 'PATH')}")
    return manifest


def manifest_signatures(manifest: dict) -> dict[str, ModelSpec]:
    return signatures_from_dict(manifest["signatures"], int(manifest["size_multiple"]))
