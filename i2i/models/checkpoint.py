"""The one on-disk contract: a self-describing, safe-to-load checkpoint.

A checkpoint is one safetensors file. Its tensors are the inference module's state_dict; its
header metadata holds one JSON document under the key "i2i":

    {"format": "i2i-checkpoint", "format_version": 1, "model": "additive",
     "config": {...}, "step": 2000, "meta": {"loss_weights": ..., "data": ..., ...},
     "versions": {"i2i": ..., "torch": ..., "python": ...}}

safetensors never unpickles, so loading an untrusted file cannot run code. Files are written
atomically (temporary file in the same folder, then rename), so a crash never leaves half a file
under the final name. Training state (optimisers, discriminators, RNG) lives in a separate file
written with the same helpers; see `i2i.train.state`.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..atomic import atomic_path

FORMAT = "i2i-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "i2i"


class CheckpointError(ValueError):
    """A file that is missing, truncated, foreign or inconsistent."""


def library_versions() -> dict[str, str]:
    import numpy

    from .. import __version__
    return {"i2i": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], document: dict) -> Path:
    """Write tensors plus one JSON document atomically to a safetensors file."""
    path = Path(path)
    # safetensors refuses views that share storage; detach and copy to contiguous CPU memory.
    plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata={METADATA_KEY: json.dumps(document, sort_keys=True)})
    return path


def read_document(path: str | Path) -> dict:
    """The JSON document of an i2i safetensors file, without reading the tensors."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(_unreadable(path, err)) from err
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{path} is a safetensors file but not an i2i file (no "
                              f"'{METADATA_KEY}' metadata); reference .pth generators are "
                              "imported with i2i-import (i2i.models.reference.import_reference)")
    try:
        return json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its i2i metadata is not valid JSON ({err})") from err


def read_tensors(path: str | Path, device: str | torch.device = "cpu"
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    document = read_document(path)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(_unreadable(Path(path), err)) from err
    return tensors, document


def save_checkpoint(path: str | Path, model: str, config: Any, state_dict: dict[str, torch.Tensor],
                    step: int = 0, meta: dict | None = None) -> Path:
    from dataclasses import asdict
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model,
                "config": asdict(config), "step": int(step), "meta": meta or {},
                "versions": library_versions()}
    return save_tensors(path, state_dict, document)


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, document) of a checkpoint, with its format checked."""
    tensors, document = read_tensors(path, device)
    check_document(path, document)
    return tensors, document


def check_document(path: str | Path, document: dict) -> None:
    if document.get("format") != FORMAT:
        raise CheckpointError(f"{path} is an i2i file of kind {document.get('format')!r}, "
                              f"not a model checkpoint ({FORMAT!r})")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version}; this i2i reads "
                              f"version {FORMAT_VERSION} (upgrade i2i to read newer files)")


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (train one with i2i-train)")
    return path


def _unreadable(path: Path, err: Exception) -> str:
    size = path.stat().st_size if path.exists() else 0
    return (f"{path} is not a readable i2i checkpoint ({size} bytes; {err}); it may be truncated "
            "or of another format. Checkpoints are .safetensors files written by i2i-train")
