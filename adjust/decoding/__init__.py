"""Decoding policies: one loop (base forward → passes → commit), one small policy per method.

========================  ====================================================  ==================
policy                    commits after each pass                               knob
========================  ====================================================  ==================
`Exact`                   the best-scoring candidate (one per base forward)     —
`Parallel`                the K best, from one forward's marginals              K
`Adjust`                  one per pass, K passes (K − 1 sampler passes)         K
`Threshold`               Fast-dLLM: confidence ≥ τ, at least one               τ
`EntropyBound`            EB-sampler: score-order prefix, Σ H − max H ≤ γ       γ
`AdaptiveAdjust`          τ or γ on the sampler-updated distributions, ≤ K_max  τ / γ, K_max
`EDLM`                    K best of the lower-judge-NLL of 2 complete draws     K
`APD`                     left-to-right prefix the judge mixture agrees with    mixture weight
========================  ====================================================  ==================

`generate(model, ..., decoding=Threshold(0.9))` runs one; docs/generation.md has the rules,
their sources and which backends run them.
"""

from adjust.decoding.adaptive import AdaptiveAdjust
from adjust.decoding.apd import APD
from adjust.decoding.edlm import EDLM
from adjust.decoding.entropy_bound import EntropyBound
from adjust.decoding.fixed import Adjust, Exact, Parallel
from adjust.decoding.judge import ARJudge, judge_for_testbed
from adjust.decoding.policy import Decision, DecodingPolicy, PassView, StepState
from adjust.decoding.threshold import Threshold

__all__ = ["APD", "ARJudge", "AdaptiveAdjust", "Adjust", "Decision", "DecodingPolicy", "EDLM", "EntropyBound",
           "Exact", "Parallel", "PassView", "StepState", "Threshold", "judge_for_testbed"]
