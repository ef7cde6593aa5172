"""Pictures people look at: sample grids (input / mask / output) and loss curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from .. import pixels  # noqa: E402
from .runlog import read_log  # noqa: E402, F401  (log.jsonl's reader, kept importable here)


def image_rgb(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    return pixels.image_array(t)


def mask_rgb(m: torch.Tensor) -> np.ndarray:
    """(C, H, W) mask in [-1, 1] -> (H, W, 3) uint8 in a diverging map (blue -, white 0, red +).

    The channel mean is shown: it is the signed change of brightness the mask makes.
    """
    value = (m.detach().float().cpu().mean(0).clamp(-1, 1).numpy() + 1) / 2
    return (matplotlib.colormaps["RdBu_r"](value)[..., :3] * 255).round().astype(np.uint8)


def unit_mask_rgb(m: torch.Tensor) -> np.ndarray:
    """(1, H, W) mask in [0, 1] -> (H, W, 3) uint8, black 0 to white 1."""
    return np.repeat(pixels.mask_array(m)[..., None], 3, axis=2)


def grid(rows: list[list[np.ndarray]], pad: int = 2) -> Image.Image:
    """Tile equally sized (H, W, 3) uint8 arrays row by row with a white gap."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = tile
    return Image.fromarray(canvas)


def scaled(picture: Image.Image, scale: int) -> Image.Image:
    """The picture enlarged `scale` times with nearest-neighbour pixels (tiny images stay sharp)."""
    if scale <= 1:
        return picture
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def translation_grid(inputs: torch.Tensor, outputs: dict[str, torch.Tensor],
                     targets: torch.Tensor | None = None, scale: int = 1) -> Image.Image:
    """Rows: input, mask (if any), output, target (if any); one column per image."""
    rows = [[image_rgb(t) for t in inputs]]
    if "mask" in outputs:
        rows.append([mask_rgb(m) for m in outputs["mask"]])
    rows.append([image_rgb(t) for t in outputs["translation"]])
    if targets is not None:
        rows.append([image_rgb(t) for t in targets])
    return scaled(grid(rows), scale)


def exemplar_grid(inputs: torch.Tensor, masks: torch.Tensor, exemplars: torch.Tensor,
                  exemplar_masks: torch.Tensor, outputs: torch.Tensor, scale: int = 1
                  ) -> Image.Image:
    """One row per pair, LOMIT's columns: input, input mask, exemplar, exemplar mask, output.

    Images (N, 3, H, W) in [-1, 1]; masks (N, 1, H, W) in [0, 1], black to white.
    """
    rows = [[image_rgb(x), unit_mask_rgb(m), image_rgb(e), unit_mask_rgb(em), image_rgb(y)]
            for x, m, e, em, y in zip(inputs, masks, exemplars, exemplar_masks, outputs,
                                      strict=True)]
    return scaled(grid(rows), scale)


# The panels of held-out metrics (evaluation.py's records): label, metric keys drawn in it.
METRIC_PANELS = (("FID", ("fid",)), ("KID", ("kid",)), ("precision, recall",
                                                         ("precision", "recall")))


def loss_curve(log: list[dict], path: str | Path, title: str = "") -> Path:
    """One panel per loss against step, smoothed with a running mean over ~2% of the run; then,
    where the log holds held-out metrics (i2i-train --eval-every), a panel for FID, one for KID
    and one for precision and recall."""
    losses = [r for r in log if "losses" in r]
    if not losses:
        raise ValueError("the loss log is empty: nothing to plot")
    metrics = [r for r in log if "metrics" in r]
    steps = np.array([r["step"] for r in losses])
    names = [k for k in losses[0]["losses"]]
    panels = [(label, keys) for label, keys in METRIC_PANELS
              if metrics and all(k in metrics[0]["metrics"] for k in keys)]
    rows = len(names) + len(panels)
    fig, axes = plt.subplots(rows, 1, figsize=(7, 1.8 * rows), sharex=True, squeeze=False)
    window = max(1, len(losses) // 50)
    for ax, name in zip(axes[:, 0], names, strict=False):
        values = np.array([r["losses"][name] for r in losses], dtype=float)
        ax.plot(steps, values, color="0.8", linewidth=0.8)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, color="C0", linewidth=1.5)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    at = np.array([r["step"] for r in metrics])
    for ax, (label, keys) in zip(axes[len(names):, 0], panels, strict=True):
        for i, key in enumerate(keys):
            ax.plot(at, [r["metrics"][key] for r in metrics], marker="o", color=f"C{i + 1}",
                    label=key)
        if len(keys) > 1:
            ax.legend(fontsize="small")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if panels:
        axes[len(names), 0].set_title(f"held-out metrics ({metrics[0].get('features', '')} "
                                      "features)", fontsize="small")
    axes[-1, 0].set_xlabel("step")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
