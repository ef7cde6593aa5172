"""engine "auto": the fastest artifact of an export that passed its parity gate and opens here.

i2i-export times every artifact that passed its gate (the gate's engine class, on one parity
batch at the export size, with torch's thread count; `timing` in its manifest entry). "auto"
reads those timings for the default signature, drops artifacts that did not pass, have no
timing, or cannot open on this machine (engine_availability: a missing package, no bf16 on this
CPU, no GPU), and opens the fastest. The choice and its reason go into the engine's spec
(`spec.choice`), the log, the server's model metadata and i2i-translate's index.html.

The timings are the export machine's: export where you serve, or name the engine.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from ..manifest import read_manifest
from .base import Engine

log = logging.getLogger("i2i.engines")


@dataclass(frozen=True)
class Choice:
    engine: str
    precision: str
    ms_per_image: float
    reason: str                 # one line: what was picked, from what, and why


def candidates(manifest: dict) -> list[tuple[float, str, str]]:
    """(ms per image at export, engine, precision) of every timed artifact that passed its gate,
    fastest first."""
    from . import ENGINES

    artifacts = manifest["signatures"]["default"]["artifacts"]
    rows = []
    for name, cls in ENGINES.items():
        for precision, (key, _, _) in (cls.artifacts or {}).items():
            entry = artifacts.get(key) or {}
            timing = entry.get("timing") or {}
            if entry.get("passed") is True and "ms_per_image" in timing:
                rows.append((float(timing["ms_per_image"]), name, precision))
    return sorted(rows)


def choose(export_dir: Path | None, device: str = "auto", precision: str = "auto") -> Choice:
    """The fastest passing artifact of export_dir that opens here (of `precision`, unless
    "auto"); ValueError saying what was found and what to do when none does."""
    from .opening import engine_availability

    if export_dir is None:
        raise ValueError("engine 'auto' chooses among an export's artifacts: pass export_dir "
                         "(--export DIR), or name an engine for a checkpoint")
    rows = [r for r in candidates(read_manifest(export_dir))
            if precision == "auto" or r[2] == precision]
    refused = []
    for ms, name, kind in rows:
        why = engine_availability(name, export_dir, None, device=device, precision=kind)
        if why is None:
            others = len(rows) - 1
            reason = (f"auto: {name} {kind}, the fastest here of {others + 1} timed artifacts "
                      f"that passed their parity gates ({ms:.1f} ms/image at export")
            reason += f"; not opened here: {'; '.join(refused)})" if refused else ")"
            return Choice(name, kind, ms, reason)
        refused.append(f"{name} {kind}: {why}")
    of = "" if precision == "auto" else f" {precision}"
    found = "; ".join(refused) if refused else "none has a timing and a passed gate"
    raise ValueError(f"engine 'auto' found no{of} artifact in {export_dir} to open here "
                     f"({found}); re-export with i2i-export (it times each artifact that "
                     "passes), or name an engine with --engine")


def open_chosen(export_dir: Path | None, *, device: str = "auto", precision: str = "auto",
                max_batch_size: int | None = None) -> Engine:
    """open_engine of the chosen artifact, its spec saying why it was chosen."""
    from .opening import open_engine

    chosen = choose(export_dir, device, precision)
    log.info("%s", chosen.reason)
    engine = open_engine(chosen.engine, export_dir=export_dir, device=device,
                         precision=chosen.precision, max_batch_size=max_batch_size)
    engine.spec = dataclasses.replace(engine.spec, choice=chosen.reason)
    return engine
