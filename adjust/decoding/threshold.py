"""Fast-dLLM's confidence-threshold parallel decoding (Wu et al. 2025, arXiv 2505.22618).

Per base forward, every candidate (masked, inside the current semi-AR block) whose confidence
is ≥ τ is committed, and at least one: the most confident candidate is committed whatever
its confidence (their fallback). This is the rule of NVlabs/Fast-dLLM's ``get_transfer_index``
with ``threshold=τ`` (LLaDA, ``llada/generate.py``: top-1 always, the others kept iff
confidence ≥ τ) and of its Dream ``confidence_threshold`` branch
(``dream/model/generation_utils_block.py``).

Confidence is the position score ``alg``, which must be a probability:

- ``alg="confidence"`` — p of the sampled token under the sampling distribution (after /T,
  top-p, top-k): Fast-dLLM's Dream code (``sample_tokens`` returns that probability);
- ``alg="low_confidence"`` — softmax of the *untempered* logits at the sampled token: Fast-dLLM's
  LLaDA code (``x0_p`` from ``softmax(logits)`` at the Gumbel-sampled ``x0``).

At T = 0 both are the top probability. τ > 1 (nothing qualifies) commits one token per base
forward, i.e. exact K = 1 decoding with the confidence rule; τ = 0 commits every candidate of
the block in one forward. Semi-AR blocks are the engine's ``block_length``.
"""

from __future__ import annotations

import math

import torch

from adjust.decoding.policy import Decision, DecodingPolicy, PassView, StepState, in_score_order, unsort
from adjust.unmasking import SamplingSettings

PROBABILITY_SCORES = ("confidence", "low_confidence")


def check_probability_score(name: str, settings: SamplingSettings) -> None:
    if settings.alg not in PROBABILITY_SCORES:
        raise ValueError(f"decoding={name}: thresholds a probability, so alg must be one of {PROBABILITY_SCORES} "
                         f"(Fast-dLLM: 'confidence' as in its Dream code, 'low_confidence' as in its LLaDA code), "
                         f"got alg={settings.alg!r}")
    if settings.alg_temp:
        raise ValueError(f"decoding={name}: commits by a threshold, not by sampled ranks: alg_temp is not used")


def check_unit(name: str, knob: str, value) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: {knob} must be a finite number ≥ 0, got {value!r}")


class Threshold(DecodingPolicy):
    """Commit every candidate with confidence ≥ ``tau``, and at least the most confident one."""

    name = "threshold"

    def __init__(self, tau: float) -> None:
        check_unit("Threshold", "tau", tau)
        self.tau = float(tau)

    def check(self, settings: SamplingSettings, sampler, backend: str, block_length: int | None) -> None:
        super().check(settings, sampler, backend, block_length)
        check_probability_score(self.name, settings)

    def commit(self, view: PassView, step: StepState) -> Decision:
        order, alive, conf = in_score_order(view, view.scores)
        first = torch.arange(alive.shape[1], device=alive.device) == 0
        return Decision.of(view, unsort(order, alive & ((conf >= self.tau) | first)))

    def __repr__(self) -> str:
        return f"Threshold(tau={self.tau})"
