"""Shared set-up of the kernel tests: device, a printed random seed, the Triton skip rule, tolerances.

Fresh random inputs each run; the seed is printed (ADJUST_TEST_SEED=<seed> replays it).
"""

import os
import random

import pytest
import torch

from adjust_kernels._triton_utils import interpreting

SEED = int(os.environ.get("ADJUST_TEST_SEED", random.randrange(2**31)))
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_triton = pytest.mark.skipif(DEVICE == "cpu" and not interpreting(), reason="needs CUDA or TRITON_INTERPRET=1")
# About one unit in the last place; the interpreter converts fp32 -> bf16 by truncation, not
# round-to-nearest-even, so under it bf16 results may sit a few units off.
REL_SLACK = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 2**-6 if interpreting() else 8e-3}


# Every kernel test module: `pytestmark = KERNEL_TEST` runs it seeded (the `kernel_seed` fixture of
# conftest.py) and skips it where Triton cannot run.
KERNEL_TEST = [requires_triton, pytest.mark.usefixtures("kernel_seed")]
