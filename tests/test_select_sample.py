"""select_sample (compiled op, adjust_kernels._C) against select_sample_reference and inline float64 truths.

Inputs are fresh each run; the seed is printed with every failure (ADJUST_TEST_SEED=<seed> replays it).
Both the op and the reference do all math in fp32 on the same upcast logits, so one tolerance serves
every logits dtype: the dtype changes the inputs, not the arithmetic.
"""

from __future__ import annotations

import importlib
import os
import random

import pytest
import torch
from scipy import stats

from adjust_kernels import SCORES, is_available, select_sample, select_sample_reference

SEED = int(os.environ.get("ADJUST_TEST_SEED", random.randrange(2**31)))
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and is_available("cuda") else [])
TOL = {"atol": 2e-5, "rtol": 1e-5}

# The extension must be built (pip install -e . compiles it); only a deliberate skip of the build skips.
needs_op = pytest.mark.skipif(
    not is_available("cpu") and os.environ.get("ADJUST_SKIP_CPP_BUILD") == "1",
    reason="adjust_kernels._C not built (ADJUST_SKIP_CPP_BUILD=1)",
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    print(f"select_sample tests: seed {SEED} (set ADJUST_TEST_SEED={SEED} to replay)")
    torch.manual_seed(SEED)


def _logits(n: int, v: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """Random logits with a tied maximum in the last column and one top-3-filtered row (-inf), as the
    engine produces after top-k."""
    x = torch.randn(n, v) * 3
    if v > 2:
        x[:, -1] = x.max(dim=-1).values
    if n > 1 and v > 3:
        x[1] = x[1].masked_fill(x[1] < x[1].topk(3).values[-1], -torch.inf)
    return x.to(dtype=dtype, device=device)


def _truth(logits: torch.Tensor, exclude_token: int, temperature: float = 0.0) -> dict[str, torch.Tensor]:
    """Float64 scores at T = 0 (and softmaxes at T), written independently of the reference."""
    x = logits.double().cpu()
    if exclude_token >= 0:
        x[:, exclude_token] = -torch.inf
    z = x / temperature if temperature > 0 else x
    p = torch.softmax(z, dim=-1)
    top = p.sort(dim=-1, descending=True).values
    return {
        "tokens": z.argmax(dim=-1),
        "entropy": -torch.distributions.Categorical(logits=z).entropy(),
        "confidence": p.max(dim=-1).values,
        "margin": top[:, 0] - top[:, 1],
        "p": p,
        "p_untempered": torch.softmax(x, dim=-1),
    }


@needs_op
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("v", [5, 37, 1031, 4099])
@pytest.mark.parametrize("n", [1, 7, 33])
def test_greedy_matches_reference(n: int, v: int, dtype: torch.dtype, exclude: bool, device: str) -> None:
    logits = _logits(n, v, dtype, device)
    exclude_token = int(logits[0].float().argmax()) if exclude else -1
    truth = _truth(logits, exclude_token)
    truth["low_confidence"] = truth["confidence"]
    for score in SCORES:
        tokens, scores = select_sample(logits, 0.0, score, seed=1, offset=2, exclude_token=exclude_token)
        ref_tokens, ref_scores = select_sample_reference(logits, 0.0, score, 1, 2, exclude_token)
        assert tokens.dtype == torch.int64 and scores.dtype == torch.float32
        assert tokens.shape == scores.shape == (n,) and tokens.device == logits.device
        assert torch.equal(tokens, ref_tokens), (score, tokens, ref_tokens)
        assert torch.equal(tokens.cpu(), truth["tokens"]), score
        torch.testing.assert_close(scores, ref_scores, **TOL, msg=lambda m, score=score: f"{score} vs reference: {m}")
        torch.testing.assert_close(
            scores.cpu().double(), truth[score], **TOL, msg=lambda m, score=score: f"{score} vs float64 truth: {m}"
        )


@needs_op
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fn", [select_sample, select_sample_reference])
def test_sampling_distribution(fn, dtype: torch.dtype, temperature: float, device: str) -> None:
    """40k draws (rows x offsets) of a 7-token distribution against its exact softmax: chi-square on the
    tokens with p > 1e-3; the near-zero token (1e-9 would not do: torch.multinomial's fp32 cumsum can
    round its bin up to one ulp, ~6e-8) and the excluded (most likely) token never appear. For the
    op the tokens are spread over two 4096-token tiles of the CPU kernel, the rest -inf (the reference's
    torch.multinomial is too slow for that width)."""
    probs = torch.tensor([0.35, 0.25, 0.2, 0.15, 0.05, 1e-30, 0.9])  # 1e-30: below any sampler's resolution
    spread = fn is select_sample
    where = torch.tensor([0, 4095, 1, 4096, 4099, 2, 4097]) if spread else torch.arange(7)
    vocab, rows, draws = (4100 if spread else 7), 2_000, 20
    exclude_token = int(where[-1])
    row = torch.full((vocab,), -torch.inf).index_copy(0, where, probs.log())
    logits = row.to(dtype).expand(rows, -1).contiguous().to(device)
    p = _truth(logits[:1], exclude_token, temperature)["p"][0]
    tokens, scores = zip(*(fn(logits, temperature, "confidence", SEED, k, exclude_token) for k in range(draws)))
    tokens, scores = torch.cat(tokens).cpu(), torch.cat(scores).cpu()
    counts = torch.bincount(tokens, minlength=vocab)
    likely = p > 1e-3
    assert counts[~likely].sum() == 0, counts[~likely].nonzero()
    expected = p[likely] / p[likely].sum() * counts[likely].sum()
    pvalue = stats.chisquare(counts[likely].numpy(), expected.numpy()).pvalue
    assert pvalue > 1e-4, (counts[likely], expected, pvalue)
    torch.testing.assert_close(scores.double(), p[tokens], atol=1e-6, rtol=1e-5)


@needs_op
@pytest.mark.parametrize("device", DEVICES)
def test_sampled_scores(device: str) -> None:
    """At T > 0: entropy and margin do not depend on the token; confidence and low_confidence are the
    tempered and untempered probabilities of the sampled token; filtered and excluded tokens never appear."""
    logits, temperature = _logits(33, 5000, torch.float32, device), 0.8
    exclude_token = int(logits[0].argmax())
    truth = _truth(logits, exclude_token, temperature)
    for score in SCORES:
        tokens, scores = select_sample(logits, temperature, score, SEED, 0, exclude_token)
        tokens, scores = tokens.cpu(), scores.cpu().double()
        assert (tokens != exclude_token).all() and (truth["p"].gather(1, tokens[:, None]) > 0).all()
        if score in ("entropy", "margin"):
            expected = select_sample_reference(logits, temperature, score, SEED, 0, exclude_token)[1]
        else:
            p = truth["p" if score == "confidence" else "p_untempered"]
            expected = p.gather(1, tokens[:, None]).squeeze(1)
        torch.testing.assert_close(scores, expected.cpu().double(), **TOL, msg=lambda m, score=score: f"{score}: {m}")


@needs_op
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("v, scale, exclude_token", [(1500, 1.0, 11), (4096 * 2 + 37, 0.05, 4111), (23, 20.0, 15)])
def test_sampling_uses_package_philox_noise(device: str, v: int, scale: float, exclude_token: int) -> None:
    """At T > 0 the token is argmax(z + G) with G = _triton_utils.gumbel_noise(seed, offset), the noise the
    Triton ops use, except where float rounding can swap two keys closer than 1e-4 (skipped). Flat logits
    (scale 0.05: the noise decides, most tokens are near the best key), three vocabulary tiles and a
    vocabulary that is no multiple of the CPU kernel's chunk, and peaked logits (scale 20: the skip
    filters drop almost every token) all check that no filter drops a winner."""
    from adjust_kernels._triton_utils import gumbel_noise

    logits, temperature = (_logits(33, v, torch.float32, device) * scale), 0.6
    seed, offset = SEED - 2**30, 2**32 + 5  # a negative seed and a two-word offset
    tokens = select_sample(logits, temperature, "entropy", seed, offset, exclude_token)[0].cpu()
    z = (logits.cpu() / temperature).index_fill(1, torch.tensor([exclude_token]), -torch.inf)
    keys = z + gumbel_noise(torch.tensor([seed, offset]), *z.shape, torch.device("cpu"))
    top = keys.topk(2, dim=-1)
    clear = top.values[:, 0] - top.values[:, 1] > 1e-4
    assert clear.sum() >= 28
    assert torch.equal(tokens[clear], top.indices[clear, 0])


@needs_op
def test_deterministic_across_threads_and_seeded() -> None:
    """Bit-identical results for 1 and 2 threads (several vocabulary tiles per row); (seed, offset) matter."""
    logits = torch.randn(33, 20_000) * 2
    threads = torch.get_num_threads()
    runs = []
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            runs.append([select_sample(logits, t, s, 123, 4, 7) for t in (0.0, 1.0) for s in SCORES])
    finally:
        torch.set_num_threads(threads)
    for (tok_a, sc_a), (tok_b, sc_b) in zip(*runs):
        assert torch.equal(tok_a, tok_b) and torch.equal(sc_a, sc_b)
    base = select_sample(logits, 1.0, "entropy", 123, 4)[0]
    assert torch.equal(base, select_sample(logits, 1.0, "entropy", 123, 4)[0])
    assert not torch.equal(base, select_sample(logits, 1.0, "entropy", 123, 5)[0])
    assert not torch.equal(base, select_sample(logits, 1.0, "entropy", 124, 4)[0])


@needs_op
@pytest.mark.skipif("cuda" not in DEVICES, reason="needs the CUDA kernel")
def test_cuda_matches_cpu() -> None:
    """Same counter-based noise on both devices: equal greedy results, and sampled tokens equal except
    where libm and CUDA's expf/logf round two near-tied Gumbel keys differently."""
    logits = torch.randn(512, 4099) * 2
    for temperature in (0.0, 1.0):
        cpu = select_sample(logits, temperature, "confidence", 9, 3, 5)
        gpu = select_sample(logits.cuda(), temperature, "confidence", 9, 3, 5)
        agree = (cpu[0] == gpu[0].cpu()).float().mean().item()
        assert (agree == 1.0) if temperature == 0 else (agree > 0.99), agree
        same = cpu[0] == gpu[0].cpu()
        torch.testing.assert_close(cpu[1][same], gpu[1].cpu()[same], **TOL)


@needs_op
def test_layouts_and_empty() -> None:
    """Non-contiguous logits give the contiguous result; N = 0 gives empty outputs of the right dtypes."""
    logits = torch.randn(37, 9).t()
    for fn in (select_sample, select_sample_reference):
        assert all(
            torch.equal(a, b)
            for a, b in zip(fn(logits, 0.0, "margin", 0, 0), fn(logits.contiguous(), 0.0, "margin", 0, 0))
        )
        tokens, scores = fn(torch.empty(0, 11), 1.0, "entropy", 0, 0)
        assert tokens.shape == scores.shape == (0,) and tokens.dtype == torch.int64 and scores.dtype == torch.float32


_GOOD = {
    "logits": torch.zeros(2, 5),
    "temperature": 1.0,
    "score": "entropy",
    "seed": 0,
    "offset": 0,
    "exclude_token": -1,
}


@pytest.mark.parametrize("fn", [select_sample, select_sample_reference])
@pytest.mark.parametrize(
    "bad, error, name",
    [
        ({"logits": torch.zeros(5)}, ValueError, "logits"),
        ({"logits": torch.zeros(2, 3, 4)}, ValueError, "logits"),
        ({"logits": torch.zeros(2, 5, dtype=torch.int64)}, TypeError, "logits"),
        ({"logits": torch.zeros(2, 5, dtype=torch.float64)}, TypeError, "logits"),
        ({"temperature": -0.5}, ValueError, "temperature"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"score": "top_k"}, ValueError, "score"),
        ({"exclude_token": 5}, ValueError, "exclude_token"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_errors(fn, bad: dict, error: type, name: str) -> None:
    with pytest.raises(error, match=name):
        fn(**{**_GOOD, **bad})


@needs_op
def test_compiled_op_checks_its_arguments() -> None:
    """The op called directly (no wrapper) rejects bad arguments instead of reading out of bounds."""
    op = torch.ops.adjust_kernels.select_sample
    with pytest.raises(ValueError, match="2-D"):
        op(torch.zeros(5), 1.0, "entropy", 0, 0, -1)
    with pytest.raises(ValueError, match="exclude_token"):
        op(torch.zeros(2, 5), 1.0, "entropy", 0, 0, 5)
    with pytest.raises(ValueError, match="unknown score"):
        op(torch.zeros(2, 5), 1.0, "top_k", 0, 0, -1)


def test_missing_extension_says_how_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    ss_mod = importlib.import_module("adjust_kernels.select_sample")  # the package attribute is the function
    monkeypatch.setattr(ss_mod, "_C", None)
    monkeypatch.setattr(ss_mod, "_IMPORT_ERROR", "ImportError: test")
    with pytest.raises(RuntimeError, match="pip install --no-build-isolation -e ."):
        select_sample(torch.zeros(2, 5), 0.0, "entropy", 0, 0)
