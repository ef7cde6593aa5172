"""manifest.json: what an export directory holds and how far each artifact was checked.

    {"format": "i2i-export", "format_version": 1, "model", "config",
     "checkpoint": {"file", "sha256", "step"}, "inputs"/"outputs": [{"name", "shape", "dtype",
     "range"}], "batch": {"min", "opt", "max"}, "size", "size_multiple", "opset", "versions",
     "artifacts": {"onnx" | "onnx_fp16" | "aoti" | "tensorrt" | "triton": {..., "parity": ...}},
     "variants": {"masked": {"call": "translate", "inputs", "outputs",
                             "artifacts": {"onnx" | "onnx_fp16" | "aoti" | "triton": {...}}}}}

"variants" is present only for models that declare `masked_inputs`. A variant's "inputs",
"outputs" and "artifacts" have the same layout as the top level's, so a reader can open it by
overlaying them on the manifest; its files are model.masked.onnx, model.masked.fp16.onnx,
model.masked.pt2 and triton/<model>_masked/.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib import metadata
from pathlib import Path

from ..models.checkpoint import library_versions

FORMAT = "i2i-export"
FORMAT_VERSION = 1


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


def write_manifest(path: Path, manifest: dict) -> Path:
    """Atomic write (temporary file + rename), so a reader never sees half a manifest."""
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_manifest(path: Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no export manifest at {path}; run i2i-export first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not an i2i export manifest")
    return manifest
