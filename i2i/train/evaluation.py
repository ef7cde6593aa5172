"""i2i-train --eval-every K: FID, KID, precision and recall of the translator while it trains.

Every K-th step (and at the last) the translator translates held-out pictures of its source
domain (the data's test split where there is one: i2i.data.domain_samples), and their features
are compared with those of held-out pictures of the target domain, computed once at the start
(i2i.eval: the same feature networks and metrics as i2i-eval). Each evaluation is one record
in log.jsonl:

    {"step": N, "features": "tiny", "metrics": {"fid", "kid", "kid_std", "precision", "recall"}}

read_log reads it beside the loss records, a resumed run keeps the ones up to the step of its
state (as it keeps loss records), and loss_curve.png draws them in panels of their own.

Inputs besides the picture: a mask input gets all ones (translate the whole picture), a second
image input (lomit's exemplar) the held-out target pictures, each source picture paired with
the next target picture. The evaluation runs on rank 0 in eval mode, without autocast, on a
forked RNG, so training draws the same random numbers with or without it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..data import domain_samples
from ..eval.compare import CompareOptions, distribution_metrics
from ..eval.distribution import K
from ..eval.features import FeatureBatches, check_features, open_features
from ..models import signatures

EVAL_COUNT = 64             # held-out pictures of each domain
LOGGED = ("fid", "kid", "kid_std", "precision", "recall")


def check_eval(options) -> None:
    """The --eval-* options of TrainOptions, before anything is built (no file is read)."""
    if options.eval_every < 0:
        raise ValueError(f"--eval-every must be at least 0 (0: no evaluation), got "
                         f"{options.eval_every}")
    if not options.eval_every:
        return
    if options.eval_count < K + 1:
        raise ValueError(f"--eval-count must be at least {K + 1}: precision and recall compare "
                         f"each picture with its {K}rd nearest neighbour; got "
                         f"{options.eval_count}")
    check_features(options.eval_features or "inception", options.inception)


def _held_out(options, data, domain: str) -> torch.Tensor:
    size = (options.size, options.size)
    images, _ = domain_samples(data.describe(), size, options.eval_count, domain)
    if images is None or len(images) < K + 1:
        found = 0 if images is None else len(images)
        raise ValueError(f"--eval-every needs at least {K + 1} held-out pictures of domain "
                         f"{domain}; {options.data} gives {found} (a folder needs test{domain} "
                         f"or train{domain}, or test/val/train for A|B pictures)")
    return images


class Evaluator:
    """The held-out pictures, the target features and the feature network of a run."""

    def __init__(self, net: nn.Module, source: torch.Tensor, target: torch.Tensor,
                 every: int, device: torch.device):
        self.net, self.every, self.device = net.to(device), every, device
        self.source, self.target = source, target                   # (M, 3, S, S) each
        self.target_features = self._features(target)

    @classmethod
    def build(cls, options, data, translator: nn.Module, device: torch.device
              ) -> Evaluator | None:
        """None without --eval-every; the held-out domains follow --direction."""
        if not options.eval_every:
            return None
        _default_call(translator)                   # inputs it cannot fill fail here
        net = open_features(options.eval_features or "inception", options.inception)
        source, target = ("B", "A") if options.direction == "BtoA" else ("A", "B")
        return cls(net, _held_out(options, data, source), _held_out(options, data, target),
                   options.eval_every, device)

    def due(self, step: int, end: int) -> bool:
        return step % self.every == 0 or step == end

    def _features(self, images: torch.Tensor) -> np.ndarray:
        batches = FeatureBatches(self.net, 32, self.device)
        for x in images:
            batches.add_image(x)
        return batches.result()

    @torch.no_grad()
    def record(self, translator: nn.Module, step: int) -> dict:
        """The log record of the translator's metrics at `step`."""
        forked = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=forked):
            was_training = translator.training
            translator.eval()
            try:
                made = self._translate(translator)
            finally:
                translator.train(was_training)
            metrics = distribution_metrics(self._features(made), self.target_features,
                                           CompareOptions())
        return {"step": step, "features": self.net.name,
                "metrics": {k: metrics[k] for k in LOGGED}}

    def _translate(self, translator: nn.Module, batch: int = 16) -> torch.Tensor:
        """(M, 3, S, S) translations of the source pictures, on the CPU."""
        call, output, inputs = _default_call(translator)
        parts = []
        for start in range(0, len(self.source), batch):
            x = self.source[start:start + batch]
            paired = (torch.arange(start, start + len(x)) + 1) % len(self.target)
            others = self.target[paired]                            # the next target pictures
            given = {name: (make(x, others)).to(self.device) for name, make in inputs.items()}
            parts.append(call(**given)[output].float().cpu())
        return torch.cat(parts)


def _default_call(translator: nn.Module
                  ) -> tuple[Callable, str, dict[str, Callable[[torch.Tensor, torch.Tensor],
                                                                 torch.Tensor]]]:
    """(the default signature's method, its translation output, how to make each input from
    the source pictures and the target pictures paired with them)."""
    spec = signatures(translator)["default"]
    inputs: dict[str, Callable] = {}
    for t in spec.inputs:
        if t.kind == "image":
            first = t.name == spec.image.name
            inputs[t.name] = (lambda x, others: x) if first else (lambda x, others: others)
        elif t.kind == "mask":
            inputs[t.name] = lambda x, others: torch.ones_like(x[:, :1])   # (N, 1, S, S)
        else:
            raise ValueError(f"--eval-every cannot fill the {t.kind} input {t.name!r} of the "
                             f"model's default signature; train without --eval-every")
    output = spec.composite.output if spec.composite else spec.outputs[0].name
    return getattr(translator, spec.method), output, inputs
