"""Resumable training state: every network, optimiser, replay pool and the RNG, in one file.

Written beside each checkpoint as `step_XXXXXX.train.safetensors` with the same atomic,
pickle-free helpers as the checkpoint itself. Optimiser tensors are flattened to
`optim/<name>/<param index>/<key>`; their param_groups go into the JSON document.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..models.checkpoint import CheckpointError, read_tensors, save_tensors
from .recipe import Recipe

FORMAT = "i2i-train-state"
FORMAT_VERSION = 1


def save_state(path: str | Path, recipe: Recipe, step: int, options: dict) -> Path:
    tensors: dict[str, torch.Tensor] = {"rng/torch": torch.get_rng_state()}
    groups = {}
    for name, net in recipe.nets.items():
        tensors.update({f"net/{name}/{k}": v for k, v in net.state_dict().items()})
    for name, opt in recipe.optimizers.items():
        sd = opt.state_dict()
        groups[name] = sd["param_groups"]
        for index, entry in sd["state"].items():
            tensors.update({f"optim/{name}/{index}/{k}": torch.as_tensor(v)
                            for k, v in entry.items()})
    for name, pool in recipe.pools.items():
        tensors.update({f"pool/{name}/{k}": v for k, v in pool.state().items()})
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, "step": step,
                "model": options["model"], "options": options, "param_groups": groups}
    return save_tensors(path, tensors, document)


def read_state_document(path: str | Path) -> dict:
    from ..models.checkpoint import read_document
    document = read_document(path)
    if document.get("format") != FORMAT or document.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not an i2i training state (format "
                              f"{document.get('format')!r} v{document.get('format_version')})")
    return document


def load_state(path: str | Path, recipe: Recipe, device: torch.device) -> int:
    """Restore `recipe` in place from a training-state file; returns the step it was saved at."""
    read_state_document(path)
    tensors, document = read_tensors(path)
    for name, net in recipe.nets.items():
        prefix = f"net/{name}/"
        net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                             if k.startswith(prefix)}, strict=True)
        net.to(device)
    for name, opt in recipe.optimizers.items():
        prefix = f"optim/{name}/"
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith(prefix):
                index, _, leaf = key[len(prefix):].partition("/")
                state.setdefault(int(index), {})[leaf] = value
        opt.load_state_dict({"state": state, "param_groups": document["param_groups"][name]})
    for name, pool in recipe.pools.items():
        prefix = f"pool/{name}/"
        pool.load({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                  device)
    torch.set_rng_state(tensors["rng/torch"])
    return int(document["step"])
