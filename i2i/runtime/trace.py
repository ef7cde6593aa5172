"""What one /v1/translate request went through, for its answer: the batches it ran in (a tiled
picture runs several, and tiles that share a batch count it once), its time waiting in the
queue and the engine time of those batches, and the total.

    queue_ms     the longest wait of the request's pieces in each batch, summed over batches
    compute_ms   the engine time of each batch the request ran in, summed
    total_ms     from the request's arrival to its answer (decoding and encoding included)

The PNG answer carries them as a standard `Server-Timing` header (browsers' developer tools
show it) and the batches as `i2i-batch: ROWS[,ROWS...]`; the JSON answer as fields.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Trace:
    started: float = field(default_factory=time.perf_counter)
    # batch number -> [rows in the batch, this request's pieces in it, queue s, compute s]
    batches: dict[int, list] = field(default_factory=dict)

    def report(self, number: int, rows: int, queue_s: float, compute_s: float) -> None:
        """Batcher.submit's report: one piece of this request ran in batch `number`."""
        seen = self.batches.setdefault(number, [rows, 0, 0.0, compute_s])
        seen[1] += 1
        seen[2] = max(seen[2], queue_s)

    def rows(self) -> list[dict[str, float]]:
        """One entry per batch, in the order they ran."""
        return [{"rows": rows, "pieces": pieces, "queue_ms": _ms(queue),
                 "compute_ms": _ms(compute)}
                for _, (rows, pieces, queue, compute) in sorted(self.batches.items())]

    def timing_ms(self) -> dict[str, float]:
        entries = self.batches.values()
        return {"queue": _ms(sum(e[2] for e in entries)),
                "compute": _ms(sum(e[3] for e in entries)),
                "total": _ms(time.perf_counter() - self.started)}

    def headers(self) -> dict[str, str]:
        """Server-Timing (W3C) and i2i-batch (each batch's rows) for the PNG answer."""
        timing = ", ".join(f"{name};dur={ms}" for name, ms in self.timing_ms().items())
        return {"Server-Timing": timing,
                "i2i-batch": ",".join(str(b["rows"]) for b in self.rows())}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
