"""The decoding-policy engine reproduces the pre-refactor engine's outputs bit for bit.

The references (`tests/fixtures/generate_reference.json`) were made by the old engine with the
command in `tests/generate_reference.py`; each case is re-run here and every output compared:
tokens, attention mask, commit order, base forwards, sampler passes and the full history
(positions in commit order, tokens, log q).
"""

import json

import pytest

from generate_reference import FIXTURE, models, run_case
from kernel_common import requires_triton

REFERENCE = json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def model_and_sampler():
    return models()


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=requires_triton) if n.startswith("triton") else n for n in REFERENCE]
)
def test_refactor_reproduces_the_old_engine(model_and_sampler, name):
    ref = REFERENCE[name]
    got = run_case(ref["case"], *model_and_sampler)
    for key, want in ref["out"].items():
        assert got[key] == want, f"{name}: {key} differs from the pre-refactor engine"
