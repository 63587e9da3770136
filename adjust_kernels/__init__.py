"""Fast kernels of adjust, one op per module, each with a pure-PyTorch reference twin.

Compiled ops (``csrc/``) live in the extension module ``adjust_kernels._C``, built by
``pip install --no-build-isolation -e .`` and registered as ``torch.ops.adjust_kernels.*``.
"""

from adjust_kernels.select_sample import SCORES, is_available, select_sample, select_sample_reference

__all__ = ["SCORES", "is_available", "select_sample", "select_sample_reference"]
