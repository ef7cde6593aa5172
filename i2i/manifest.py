"""manifest.json: what an export directory holds and how far each artifact was checked.

    {"format": "i2i-export", "format_version": 2, "model", "config",
     "checkpoint": {"file", "sha256", "step", "direction"},  (direction: AtoB, BtoA or null)
     "batch": {"min", "opt", "max"}, "size", "size_multiple", "opset", "versions", "created",
     "signatures": {"default": {"method": "forward", "inputs": [TensorSpec dicts],
                                "outputs": [...],
                                "artifacts": {"onnx" | "onnx_fp16" | "onnx_int8" |
                                              "openvino" | "openvino_bf16" |
                                              "openvino_int8" | "aoti" | "tensorrt" |
                                              "tensorrt_int8" | "triton":
                                              {"file", "precision", "sha256", "parity",
                                               "threshold", "passed", "timing", ...}}},
                    "masked": {...}, ...},
     "calibration": {"source", "images", "held_out_for_parity", "method"},  (with int8)
     "parity_failures": [...],                     (only when an artifact missed its threshold)
     "manifest_sha256"}                            (the sha256 of the rest; see below)

Every signature of the model has the same layout; its files are model.onnx, model.fp16.onnx,
model.int8.onnx, model.int8.openvino.onnx, model.pt2, model.plan, model.int8.plan and
triton/<model>/ for `default` (the openvino entries name model.onnx or model.int8.openvino.onnx,
which OpenVINO reads directly),
model.<signature>.onnx, ... and triton/<model>_<signature>/ for the others. Engines read it
(below export and runtime, both use it); format 1 (before signatures) is refused with a
request to re-export.

What is checked, and where:

- manifest.json (read_manifest, whenever an engine or the demo reads an export): it must be
  JSON with every key above, of format 2; `manifest_sha256`, written by write_manifest, is the
  sha256 of the rest of the manifest (canonical JSON) and must match, so a manifest edited by
  hand or damaged on disk (a zeroed checkpoint sha256, say) is refused. A manifest without it
  (written before it existed) is still read.
- each artifact (i2i.engines.opening, when an engine opens it): the file's sha256 must be the
  one its manifest entry records (the export gate hashed it after its parity check); a changed
  file, or an entry without a sha256, is refused: re-export. A file that still cannot be
  loaded is reported as corrupt, with the same request.
- the checkpoint (i2i.engines.opening, eager and fused engines): a checkpoint given with an
  export, or the copy inside it, must have `checkpoint.sha256`.

These hashes catch damage and edits that leave the manifest as it was; they are not a
signature: whoever can rewrite the whole folder can rewrite the hashes too. To trust an export
that crossed an untrusted channel, compare its manifest_sha256 with one kept apart from it.
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
    for package in ("onnx", "onnxruntime", "onnxscript", "onnxconverter-common", "openvino",
                    "tensorrt"):
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


def manifest_digest(manifest: dict) -> str:
    """The sha256 of `manifest` less its manifest_sha256, as canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(path: Path, manifest: dict) -> Path:
    """Atomic write, so a reader never sees half a manifest; manifest_sha256 is added."""
    manifest = {**manifest, "manifest_sha256": manifest_digest(manifest)}
    return write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_manifest(path: Path) -> dict:
    """The manifest of an export folder (or file), checked: raises FileNotFoundError when there
    is none, ValueError (naming the file, asking for a re-export) when it is not a readable
    format-2 manifest, has been changed since export, or lacks what engines read."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no export manifest at {path}; run i2i-export first")
    redo = f"re-export it with i2i-export --out {path.parent}"
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except ValueError as err:       # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"{path} is not a readable manifest (not JSON: {err}); {redo}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not an i2i export manifest; {redo}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        checkpoint = manifest.get("checkpoint")
        file = checkpoint.get("file", "PATH") if isinstance(checkpoint, dict) else "PATH"
        raise ValueError(f"{path} is an i2i export of format {version}; this i2i reads format "
                         f"{FORMAT_VERSION} (signatures): re-export it with i2i-export "
                         f"--checkpoint {file}")
    if "manifest_sha256" in manifest and manifest["manifest_sha256"] != manifest_digest(manifest):
        raise ValueError(f"{path} changed since export (its manifest_sha256 does not match its "
                         f"contents); {redo}")
    problem = _problem(manifest)
    if problem:
        raise ValueError(f"{path} is incomplete or damaged ({problem}); {redo}")
    return manifest


_REQUIRED = {"model": str, "checkpoint": dict, "batch": dict, "size": list,
             "size_multiple": int, "signatures": dict}


def _problem(manifest: dict) -> str | None:
    """What an engine would trip over in `manifest`, or None."""
    for key, kind in _REQUIRED.items():
        if key not in manifest:
            return f"no {key!r}"
        if not isinstance(manifest[key], kind):
            return f"{key!r} is not a {kind.__name__}"
    if "sha256" not in manifest["checkpoint"]:
        return "no 'checkpoint.sha256'"
    if not all(isinstance(manifest["batch"].get(k), int) for k in ("min", "opt", "max")):
        return "'batch' needs integers min, opt and max"
    if len(manifest["size"]) != 2 or not all(isinstance(s, int) for s in manifest["size"]):
        return "'size' is not [height, width]"
    if DEFAULT not in manifest["signatures"]:
        return f"no {DEFAULT!r} signature"
    for label, entry in manifest["signatures"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("artifacts", {}), dict):
            return f"signature {label!r} is not an object with 'artifacts'"
    try:
        manifest_signatures(manifest)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        return f"a signature does not read: {type(err).__name__}: {err}"
    return None


def manifest_signatures(manifest: dict) -> dict[str, ModelSpec]:
    return signatures_from_dict(manifest["signatures"], int(manifest["size_multiple"]))
