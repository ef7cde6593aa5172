"""Import generators saved by the reference CycleGAN/pix2pix code (`latest_net_G*.pth`).

Those files are plain state_dicts keyed by nn.Sequential indices (`model.1.weight`, ...). They are
read with `torch.load(weights_only=True)`, which refuses arbitrary pickled objects; the keys are
mapped to i2i's named modules, the architecture (ngf, blocks, depth, dropout) is read off the keys
and shapes, and the result is written as an i2i checkpoint.

    python -m i2i.models.reference latest_net_G_A.pth --model cyclegan --out horse2zebra.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import torch

from . import MODELS, CheckpointError, build, get_entry, load_state, make_config
from .checkpoint import save_checkpoint

STALE_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


def resnet_key_map(n_blocks: int, dropout: bool) -> dict[str, str]:
    """Reference module prefix -> i2i module prefix for the ResNet generator."""
    second = 6 if dropout else 5
    mapping = {"model.1": "generator.stem.conv", "model.4": "generator.down.0.conv",
               "model.7": "generator.down.1.conv",
               f"model.{10 + n_blocks}": "generator.up.0.conv",
               f"model.{13 + n_blocks}": "generator.up.1.conv",
               f"model.{17 + n_blocks}": "generator.head"}
    for i in range(n_blocks):
        mapping[f"model.{10 + i}.conv_block.1"] = f"generator.blocks.{i}.conv1"
        mapping[f"model.{10 + i}.conv_block.{second}"] = f"generator.blocks.{i}.conv2"
    return mapping


def unet_key_map(depth: int) -> dict[str, str]:
    """Reference prefixes of the nested UnetSkipConnectionBlocks -> i2i's flat down/up lists."""
    mapping = {}
    prefix = "model.model."
    for level in range(depth):
        if level == 0:
            mapping[prefix + "0"] = "generator.down.0.0"
            mapping[prefix + "3"] = "generator.up.0.1"
        elif level == depth - 1:                     # innermost: no down norm, no submodule
            mapping[prefix + "1"] = f"generator.down.{level}.0"
            mapping[prefix + "3"] = f"generator.up.{level}.1"
            mapping[prefix + "4"] = f"generator.up.{level}.2"
        else:
            mapping[prefix + "1"] = f"generator.down.{level}.0"
            mapping[prefix + "2"] = f"generator.down.{level}.1"
            mapping[prefix + "5"] = f"generator.up.{level}.1"
            mapping[prefix + "6"] = f"generator.up.{level}.2"
        prefix += ("1" if level == 0 else "3") + ".model."
    return mapping


def infer_resnet_config(state: dict[str, torch.Tensor]) -> dict:
    if "model.1.weight" not in state:
        raise CheckpointError("not a reference ResNet generator: no 'model.1.weight' key "
                              f"(first keys: {sorted(state)[:5]})")
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    dropout = any(".conv_block.6.weight" in k for k in state)
    return {"ngf": state["model.1.weight"].shape[0], "n_blocks": len(blocks),
            "channels": state["model.1.weight"].shape[1], "dropout": dropout}


def infer_unet_config(state: dict[str, torch.Tensor]) -> dict:
    if "model.model.0.weight" not in state:
        raise CheckpointError("not a reference U-Net generator: no 'model.model.0.weight' key "
                              f"(first keys: {sorted(state)[:5]})")
    depth = max(k.count(".model.") for k in state)  # one '.model.' per nesting level
    first = state["model.model.0.weight"]
    dropout = depth >= 6                        # the reference always builds unet_128/256 with it
    return {"depth": depth, "ngf": first.shape[0], "channels": first.shape[1], "dropout": dropout}


def convert(state: dict[str, torch.Tensor], model: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(i2i state_dict, config values) from a reference generator state_dict."""
    layout = get_entry(model).reference
    if layout not in LAYOUTS:
        known = sorted(name for name, entry in MODELS.items() if entry.reference in LAYOUTS)
        raise CheckpointError(f"no reference importer for model {model!r}; "
                              f"known: {', '.join(known)}")
    state = {k.removeprefix("module."): v for k, v in state.items()}   # DataParallel saves
    infer_config, key_map, stale_stats = LAYOUTS[layout]
    config = infer_config(state)
    mapping = key_map(config)
    converted, unexpected = {}, []
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in mapping:
            converted[f"{mapping[prefix]}.{leaf}"] = value
        elif leaf in STALE_NORM_STATS and stale_stats:
            continue         # old InstanceNorm running stats: unused with track_running_stats=False
        else:
            unexpected.append(key)
    if unexpected:
        raise CheckpointError(f"unexpected keys for a reference {model} generator: {unexpected}")
    return converted, config


# layout (ModelEntry.reference) -> (config from the state_dict, key map from that config,
# whether old InstanceNorm running statistics may be present and are dropped)
LAYOUTS = {
    "resnet": (infer_resnet_config,
               lambda config: resnet_key_map(config["n_blocks"], config["dropout"]), True),
    "unet": (infer_unet_config, lambda config: unet_key_map(config["depth"]), False),
}


def import_reference(path: str | Path, model: str, out: str | Path) -> Path:
    """Read a reference `.pth` generator safely and write it as an i2i checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"reference checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:      # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{path} could not be read as a weights-only state_dict: {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a plain state_dict of tensors")
    converted, values = convert(state, model)
    config = make_config(model, values)
    module = build(model, config)
    load_state(module, converted, source=str(path))      # lists missing/unexpected/shape problems
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = {"imported_from": path.name, "source_sha256": digest, "data": {"kind": "reference"}}
    return save_checkpoint(out, model, config, module.state_dict(), step=0, meta=meta)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pth", help="reference generator state_dict, e.g. latest_net_G_A.pth")
    parser.add_argument("--model", default="cyclegan", help="cyclegan, additive or pix2pix")
    parser.add_argument("--out", required=True, help="the i2i checkpoint to write (.safetensors)")
    args = parser.parse_args(argv)
    try:
        written = import_reference(args.pth, args.model, args.out)
    except (CheckpointError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
