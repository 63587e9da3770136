"""Fast kernels of adjust, one op per module, each with a pure-PyTorch reference twin.

The package is a leaf: it imports nothing from ``adjust``. The pure-PyTorch primitives the twins share
with the engine live here and ``adjust`` re-exports them: ``rotary`` (RoPE), ``sampling_settings``
(``SamplingSettings``, ``filter_logits``), ``kept_ids`` (candidate-restricted vocabulary).

Compiled ops (``csrc/``) live in the extension module ``adjust_kernels._C``, built by
``pip install --no-build-isolation -e .`` and registered as ``torch.ops.adjust_kernels.*``.
"""

from adjust_kernels.select_sample import SCORES, is_available, select_sample, select_sample_reference

__all__ = ["SCORES", "is_available", "select_sample", "select_sample_reference"]
