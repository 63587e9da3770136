"""adjust: approximate joint sampling (ADJUST) for masked diffusion language models.

    import adjust
    model = adjust.MaskedDiffusionLM.from_pretrained("synthetic")
    sampler = adjust.AdjustSampler.from_pretrained("synthetic")
    out = adjust.generate(model, K=4, sampler=sampler, max_new_tokens=16, batch_size=8, seed=0)
"""

from adjust.generate import GenerationOutput, StepRecord, generate
from adjust.models.adapter import DiffusionLMAdapter, as_adapter
from adjust.models.mdlm import MaskedDiffusionLM, MDLMConfig
from adjust.sampler import AdjustSampler

__all__ = [
    "AdjustSampler",
    "DiffusionLMAdapter",
    "GenerationOutput",
    "MDLMConfig",
    "MaskedDiffusionLM",
    "StepRecord",
    "as_adapter",
    "generate",
]
__version__ = "0.1.0"
