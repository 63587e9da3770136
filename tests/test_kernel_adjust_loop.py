"""adjust_loop: the Triton ADJUST passes against the same loop on the PyTorch pieces, against
AdjustSampler.forward, and against one base step of the reference engine adjust.generate.
Runs under TRITON_INTERPRET=1 on CPU (CUDA-graph capture is checked only on a GPU).

Fresh random models and inputs each run; the seed is printed (ADJUST_TEST_SEED=<seed> replays it).
Draws where the reference came within fp32 rounding of a tie between two candidates are redrawn,
since there either choice is right (see _separated_case).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_mdlm

import adjust
from adjust.models.adapter import as_adapter
from adjust.sampler import AdjustSampler
from adjust_kernels import adjust_loop
from kernel_common import DEVICE, KERNEL_TEST, SEED
from adjust_kernels._triton_utils import assert_no_worse
from adjust_kernels.adjust_loop import (
    AdjustLoop,
    adjust_passes,
    adjust_passes_reference,
)
from adjust_kernels.lm_head_sample import SCORES

pytestmark = KERNEL_TEST
V, K = 53, 4



def _model_and_sampler(seed: int, dtype: torch.dtype = torch.float32):
    # mix/sharpen: context-dependent, peaked marginals, so the candidates' scores differ clearly.
    model = tiny_mdlm(vocab_size=V, seed=seed, sharpen=10.0, mix=10.0).to(device=DEVICE, dtype=dtype)
    g = AdjustSampler.from_base(model, positions=5)
    with torch.no_grad():  # a sampler that matters: nonzero output norm, perturbed projections (absolute positions too)
        g.norm_out.weight.uniform_(0.5, 1.5)
        g.down_proj.weight.add_(0.2 * torch.randn_like(g.down_proj.weight))
        g.pos_proj.weight.normal_(0.0, 0.5)
    return model, g.eval()


def _candidates(x: torch.Tensor, attn: torch.Tensor, mask_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cand_idx (ascending masked positions, -1 padded), alive, n_passes = min(masked, K): as the engine sees them."""
    cand = (x == mask_id) & attn.bool()
    C = max(1, int(cand.sum(1).max()))
    order = torch.sort((~cand).to(torch.int8), dim=1, stable=True).indices[:, :C]
    alive = cand.gather(1, order)
    return torch.where(alive, order, -1), alive, cand.sum(1).clamp(max=K)


def _random_batch(model) -> tuple[torch.Tensor, torch.Tensor]:
    """3 rows, L = 13: row 0 left-padded with 6 masks, row 1 with 2 masks (commits fewer than K), row 2 none."""
    ad = as_adapter(model)
    x = torch.randint(4, V, (3, 13), device=DEVICE)
    attn = torch.ones(3, 13, dtype=torch.long, device=DEVICE)
    attn[0, :3] = 0
    x[0, :3] = ad.pad_token_id
    x[0, [3, 5, 6, 9, 11, 12]] = ad.mask_token_id
    x[1, [2, 8]] = ad.mask_token_id
    return x, attn


def _run(run, model, g, x: torch.Tensor, attn: torch.Tensor, temperature: float, alg: str, **extra):
    """One base step through `run` (adjust_passes or its reference) on a copy of x; `extra`: more loop arguments."""
    ad = as_adapter(model)
    x = x.clone()
    cand_idx, alive, n_passes = _candidates(x, attn, ad.mask_token_id)
    so = torch.tensor([SEED, 100], device=DEVICE)
    pos, logq = run(ad.hidden(x, attn), x, cand_idx, alive, n_passes, g, ad.embed_tokens.weight, ad.lm_head_weight, None,
                    so, num_passes=K, temperature=temperature, alg=alg, mask_token_id=ad.mask_token_id, attention_mask=attn, **extra)
    return x, alive, pos.clone(), logq.clone(), so


def _closest_tie(monkeypatch, model, g, x: torch.Tensor, attn: torch.Tensor, temperature: float, alg: str, **extra) -> float:
    """Run the reference loop and return the smallest relative gap, over the rows that commit at each
    pass, between the best and the runner-up candidate score (how close it came to a tie)."""
    pieces = adjust_loop._BACKENDS["torch"]
    gaps: list[float] = []
    state: dict = {"k": 0}

    def recording(hc, *args, **kw):
        out = pieces.lm_head_sample(hc, *args, **kw)
        alive = state["alive"]
        s = out[1].view(alive.shape).masked_fill(~alive, float("-inf"))
        if s.shape[1] > 1:
            top = s.topk(2, dim=1).values
            for b in range(s.shape[0]):
                if state["n_passes"][b] > state["k"] and top[b, 1] > float("-inf"):
                    gaps.append(float((top[b, 0] - top[b, 1]) / top[b, 0].abs().clamp(min=1e-3)))
        state["k"] += 1
        return out

    def spy(h0, x_, cand_idx, alive, n_passes, *args, **kw):
        state.update(alive=alive, n_passes=n_passes)
        return adjust_passes_reference(h0, x_, cand_idx, alive, n_passes, *args, **kw)

    with monkeypatch.context() as mp:
        mp.setitem(adjust_loop._BACKENDS, "torch", dataclasses.replace(pieces, lm_head_sample=recording))
        _run(spy, model, g, x, attn, temperature, alg, **extra)
    return min(gaps, default=1.0)


def _separated_case(monkeypatch, make_x, temperature: float, alg: str, **extra):
    """A model, sampler and inputs whose reference run never came within 1e-5 (relative) of a tie between
    two candidates: at such a near-tie fp32 rounding may pick either, so those draws are redrawn
    (deterministically from SEED) instead of compared."""
    for attempt in range(20):
        model, g = _model_and_sampler(SEED % 10_000 + attempt)
        x, attn = make_x(model)
        if _closest_tie(monkeypatch, model, g, x, attn, temperature, alg, **extra) > 1e-5:
            return model, g, x, attn
    pytest.fail("no draw without a near-tie in 20 attempts")


@pytest.mark.parametrize("temperature,alg", [(0.0, "entropy"), (0.0, "margin"), (0.9, "confidence"), (0.9, "low_confidence")])
def test_triton_loop_equals_reference_loop(monkeypatch, temperature: float, alg: str) -> None:
    model, g, x, attn = _separated_case(monkeypatch, _random_batch, temperature, alg)
    x1, a1, p1, l1, s1 = _run(adjust_passes, model, g, x, attn, temperature, alg)
    x2, a2, p2, l2, s2 = _run(adjust_passes_reference, model, g, x, attn, temperature, alg)
    assert torch.equal(x1, x2) and torch.equal(a1, a2) and torch.equal(p1, p2)
    assert torch.allclose(l1, l2, atol=1e-5)
    assert torch.equal(s1, torch.tensor([SEED, 100 + K], device=DEVICE)) and torch.equal(s1, s2)
    # Row 0 commits K tokens, row 1 its 2, row 2 none; each at a distinct masked position, never the mask id.
    mask_id = as_adapter(model).mask_token_id
    assert (p1 >= 0).sum(1).tolist() == [K, 2, 0]
    for b in range(3):
        committed = p1[b][p1[b] >= 0]
        assert len(set(committed.tolist())) == len(committed)
        assert (x[b, committed] == mask_id).all() and (x1[b, committed] != mask_id).all()
    assert torch.equal(x1 != x, torch.zeros_like(x1, dtype=torch.bool).scatter(1, p1.clamp(min=0), p1 >= 0))


@pytest.mark.parametrize("alg", SCORES)
def test_one_base_step_equals_generate(monkeypatch, alg: str) -> None:
    """generate(max_new_tokens=2) on prompts holding masks: every row has ≤ K masks, so one base step."""
    m = as_adapter(tiny_mdlm(vocab_size=V)).mask_token_id
    prompts = [[1, 5, m, 7, m, 9], [1, 11], [1, m, 6, 8]]  # 4, 2 and 3 masks with the 2 new tokens
    P = max(map(len, prompts))

    def engine_batch(model) -> tuple[torch.Tensor, torch.Tensor]:  # left-padded prompts, then the new masks
        pad = as_adapter(model).pad_token_id
        x = torch.tensor([[pad] * (P - len(p)) + p + [m, m] for p in prompts], device=DEVICE)
        return x, torch.tensor([[0] * (P - len(p)) + [1] * (len(p) + 2) for p in prompts], device=DEVICE)

    model, g, x, attn = _separated_case(monkeypatch, engine_batch, 0.0, alg)
    out = adjust.generate(model, prompts, K=K, sampler=g, max_new_tokens=2, temperature=0.0, alg=alg)
    assert out.base_forwards == 1
    xt, _, pos, _, _ = _run(adjust_passes, model, g, x, attn, 0.0, alg)
    assert torch.equal(xt, out.sequences)
    # Same unmask order: the position committed at pass k is the one the engine marks with pass k.
    assert (pos >= 0).sum(1).tolist() == [4, 2, 3]
    for b in range(3):
        for k in range(K):
            if pos[b, k] >= 0:
                assert out.commit_pass[b, pos[b, k]] == k


@pytest.mark.parametrize("temperature,alg", [(0.0, "entropy"), (0.9, "low_confidence")])
def test_restricted_loop_equals_reference_loop(monkeypatch, temperature: float, alg: str) -> None:
    """candidate_tokens=k': the fused loop (logits_out + topk, then kept-id passes) against its twin."""
    model, g, x, attn = _separated_case(monkeypatch, _random_batch, temperature, alg, candidate_tokens=5)
    x1, a1, p1, l1, s1 = _run(adjust_passes, model, g, x, attn, temperature, alg, candidate_tokens=5)
    x2, a2, p2, l2, s2 = _run(adjust_passes_reference, model, g, x, attn, temperature, alg, candidate_tokens=5)
    assert torch.equal(x1, x2) and torch.equal(a1, a2) and torch.equal(p1, p2) and torch.equal(s1, s2)
    assert torch.allclose(l1, l2, atol=1e-5)
    assert (p1 >= 0).sum(1).tolist() == [K, 2, 0]


@pytest.mark.parametrize("temperature,alg", [(0.0, "entropy"), (0.9, "confidence")])
def test_context_cached_loop_equals_reference_loop(monkeypatch, temperature: float, alg: str) -> None:
    """cache_context=True: the candidate-only passes over cached context keys/values, against the twin."""
    model, g, x, attn = _separated_case(monkeypatch, _random_batch, temperature, alg, cache_context=True)
    x1, a1, p1, l1, s1 = _run(adjust_passes, model, g, x, attn, temperature, alg, cache_context=True)
    x2, a2, p2, l2, s2 = _run(adjust_passes_reference, model, g, x, attn, temperature, alg, cache_context=True)
    assert torch.equal(x1, x2) and torch.equal(a1, a2) and torch.equal(p1, p2) and torch.equal(s1, s2)
    assert torch.allclose(l1, l2, atol=1e-5)
    assert (p1 >= 0).sum(1).tolist() == [K, 2, 0]


def test_context_step_is_the_engines_context_cache() -> None:
    """The loop's candidate-only pass (torch pieces) = adjust.context_cache.ContextCache, row for row."""
    from adjust.context_cache import ContextCache

    model, g = _model_and_sampler(SEED % 10_000)
    ad = as_adapter(model)
    x, attn = _random_batch(model)
    cand_idx, _, _ = _candidates(x, attn, ad.mask_token_id)
    h0 = ad.hidden(x, attn)
    h1 = h0 + 0.3 * torch.randn_like(h0)
    kw = {"batch_size": 3, "seq_len": 13, "num_candidates": cand_idx.shape[1], "num_passes": K, "temperature": 0.0,
          "mask_token_id": ad.mask_token_id, "attention_mask": attn, "cache_context": True}
    with torch.no_grad():
        want = ContextCache(g, ad, h0, x, attn, (x == ad.mask_token_id) & attn.bool())(h1, x)
        for backend in ("torch", "triton"):
            loop = AdjustLoop(g, ad.embed_tokens.weight, ad.lm_head_weight, backend=backend, **kw)
            got = loop._context_step(h1, x, loop._context(h0, x, cand_idx))
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item(), msg=backend)


def test_window_passes_are_the_engines_sampler_block_cache() -> None:
    """sampler_cache=True: a full step's recorded passes, then a later step's window passes (the last one at
    the candidates) = adjust.sampler_block_cache.SamplerBlockCache, row for row, on both backends."""
    from adjust.sampler_block_cache import SamplerBlockCache

    model, g = _model_and_sampler(SEED % 10_000)
    ad = as_adapter(model)
    x, attn = _random_batch(model)
    start, end = 5, 12  # every candidate inside, as in a block: row 0's 5, 6, 9, 11, row 1's 8
    x[0, [3, 12]] = x[1, 2] = 4
    cand_idx, _, _ = _candidates(x, attn, ad.mask_token_id)
    rows = (x == ad.mask_token_id) & attn.bool()
    h0 = ad.hidden(x, attn)
    h1 = h0.clone()
    h1[:, start:end] += 0.3 * torch.randn_like(h1[:, start:end])  # the window's fresh base states
    kw = {"batch_size": 3, "seq_len": 13, "num_candidates": cand_idx.shape[1], "num_passes": K, "temperature": 0.0,
          "mask_token_id": ad.mask_token_id, "attention_mask": attn, "sampler_cache": True}
    with torch.no_grad():
        eager = SamplerBlockCache(g, ad)
        eager.start_step(None)
        full = [h0]
        for k in range(1, K - 1):
            full.append(eager(full[-1], x, attn, k, None))
        eager(full[-1], x, attn, K - 1, rows)
        eager.start_step((start, end))
        want = [h1]
        for k in range(1, K - 1):
            want.append(eager(want[-1], x, attn, k, None))
        at = cand_idx.clamp(min=0)[..., None].expand(-1, -1, h0.shape[-1])
        want_last = eager(want[-1], x, attn, K - 1, rows).gather(1, at)[cand_idx >= 0]
        for backend in ("torch", "triton"):
            loop = AdjustLoop(g, ad.embed_tokens.weight, ad.lm_head_weight, backend=backend, **kw)
            h = h0
            for k in range(1, K - 1):
                h = loop.sampler_step(h, x, loop._record[k - 1])
            loop._final_rows(h, x, cand_idx, loop._record[K - 2])
            loop._window, h = (start, end), h1
            tol = {"rtol": 1e-5, "atol": 1e-5 * want_last.abs().max().item(), "msg": backend}
            for k in range(1, K - 1):
                h = loop._window_step(h, x, k)
                torch.testing.assert_close(h[:, start:end], want[k][:, start:end], **tol)
            last = loop._window_final_rows(h, x, cand_idx, K - 1).view(3, -1, h.shape[-1])
            torch.testing.assert_close(last[cand_idx >= 0], want_last, **tol)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_window_call_keeps_the_record_outside_the_window(backend: str) -> None:
    """A call with a window runs every pass on it: each pass's record changes inside the window only."""
    loop, h0, x, cand_idx, alive, n_passes = _loop_and_state(None, sampler_cache=True, backend=backend)
    start, end = 2, 13  # every candidate of the batch inside
    so = torch.tensor([SEED, 0], device=DEVICE)
    loop(h0, x.clone(), cand_idx, alive.clone(), n_passes, so)
    before = [(k.clone(), v.clone()) for k, v in loop._record]
    h1 = h0.clone()
    h1[:, start:end] += 0.3 * torch.randn_like(h1[:, start:end])
    loop(h1, x.clone(), cand_idx, alive.clone(), n_passes, so, window=(start, end))
    for (k0, v0), (k1, v1) in zip(before, loop._record):
        assert torch.equal(k1[:, :, :start], k0[:, :, :start]) and torch.equal(v1[:, :, :start], v0[:, :, :start])
        assert torch.equal(k1[:, :, end:], k0[:, :, end:]) and not torch.allclose(k1, k0)
    with pytest.raises(ValueError, match="sampler_cache=True"):
        _loop_and_state(None, backend=backend)[0](h0, x.clone(), cand_idx, alive.clone(), n_passes, so, window=(2, 13))


def test_restricted_loop_keeping_every_id_is_the_exact_loop() -> None:
    model, g = _model_and_sampler(SEED % 10_000)
    x, attn = _random_batch(model)
    exact = _run(adjust_passes, model, g, x, attn, 0.9, "entropy")
    kept_all = _run(adjust_passes, model, g, x, attn, 0.9, "entropy", candidate_tokens=V)
    assert torch.equal(exact[0], kept_all[0]) and torch.equal(exact[2], kept_all[2])
    torch.testing.assert_close(exact[3], kept_all[3], rtol=1e-5, atol=1e-5)


def test_restricted_step_equals_generate(monkeypatch) -> None:
    """One base step of the fused restricted loop = generate(backend='torch', candidate_tokens=k') at T = 0."""
    m = as_adapter(tiny_mdlm(vocab_size=V)).mask_token_id
    prompts = [[1, 5, m, 7, m, 9], [1, m, 6, 8]]
    P = max(map(len, prompts))

    def engine_batch(model) -> tuple[torch.Tensor, torch.Tensor]:
        pad = as_adapter(model).pad_token_id
        x = torch.tensor([[pad] * (P - len(p)) + p + [m, m] for p in prompts], device=DEVICE)
        return x, torch.tensor([[0] * (P - len(p)) + [1] * (len(p) + 2) for p in prompts], device=DEVICE)

    model, g, x, attn = _separated_case(monkeypatch, engine_batch, 0.0, "entropy", candidate_tokens=4)
    out = adjust.generate(model, prompts, K=K, sampler=g, max_new_tokens=2, temperature=0.0, candidate_tokens=4)
    xt = _run(adjust_passes, model, g, x, attn, 0.0, "entropy", candidate_tokens=4)[0]
    assert out.base_forwards == 1 and torch.equal(xt, out.sequences)


def test_sampler_step_is_the_sampler() -> None:
    model, g = _model_and_sampler(SEED % 10_000)
    ad = as_adapter(model)
    x, attn = _random_batch(model)
    h = ad.hidden(x, attn)
    kw = {"batch_size": 3, "seq_len": 13, "num_candidates": 6, "num_passes": K, "temperature": 0.0,
          "mask_token_id": ad.mask_token_id, "attention_mask": attn}
    with torch.no_grad():
        want = g(h, x, ad, attn)
        ref = AdjustLoop(g, ad.embed_tokens.weight, ad.lm_head_weight, backend="torch", **kw).sampler_step(h, x)
        fast = AdjustLoop(g, ad.embed_tokens.weight, ad.lm_head_weight, **kw).sampler_step(h, x)
        truth = g.double()(h.double(), x, as_adapter(model.double()), attn)
    assert torch.equal(ref, want)  # the reference pieces are the module, bit for bit
    assert_no_worse(fast, want, truth, 1e-5 * truth.abs().max().item(), "sampler_step")


def test_half_precision_loop_commits_valid_tokens() -> None:
    model, g = _model_and_sampler(SEED % 10_000, torch.float16)
    x, attn = _random_batch(model)
    x1, alive, pos, logq, _ = _run(adjust_passes, model, g, x, attn, 1.0, "entropy")
    mask_id = as_adapter(model).mask_token_id
    assert (pos >= 0).sum(1).tolist() == [K, 2, 0]
    assert int((x1 != x).sum()) == K + 2 and (x1[x1 != x] != mask_id).all()
    assert int(alive.sum()) == 6 + 2 - (K + 2)
    assert (logq[pos >= 0] <= 0).all() and logq.isfinite().all()


def _loop_and_state(candidate_tokens: int | None, inputs: str = "all", **options):
    model, g = _model_and_sampler(SEED % 10_000)
    g.inputs = inputs  # "new": g's tokens rebuilt from the step's start at every pass (adjust.sampler)
    ad = as_adapter(model)
    x, attn = _random_batch(model)
    cand_idx, alive, n_passes = _candidates(x, attn, ad.mask_token_id)
    loop = AdjustLoop(g, ad.embed_tokens.weight, ad.lm_head_weight, batch_size=3, seq_len=13, num_candidates=cand_idx.shape[1],
                      num_passes=K, temperature=0.8, mask_token_id=ad.mask_token_id, attention_mask=attn,
                      candidate_tokens=candidate_tokens, **options)
    return loop, ad.hidden(x, attn), x, cand_idx, alive, n_passes


@pytest.mark.skipif(DEVICE != "cuda", reason="host syncs exist only on CUDA")
@pytest.mark.parametrize("candidate_tokens,options", [(None, {}), (5, {}), (None, {"cache_context": True}),
                                                      (None, {"top_p": 0.9, "top_k": 7}), (None, {"sampler_cache": True}),
                                                      (None, {"inputs": "new"})])
def test_loop_never_syncs_the_host(candidate_tokens: int | None, options: dict) -> None:
    loop, h0, x, cand_idx, alive, n_passes = _loop_and_state(candidate_tokens, **options)
    so = torch.tensor([SEED, 0], device=DEVICE)
    loop(h0, x.clone(), cand_idx, alive.clone(), n_passes, so)  # first call: Triton compilation
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loop(h0, x.clone(), cand_idx, alive.clone(), n_passes, so)
        if options.get("sampler_cache"):  # a later step of a block: the passes on the window
            loop(h0, x.clone(), cand_idx, alive.clone(), n_passes, so, window=(2, 13))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("candidate_tokens,options", [(None, {}), (5, {}), (None, {"cache_context": True}),
                                                      (None, {"inputs": "new"})])
def test_capture_records_a_graph_on_cuda_only(candidate_tokens: int | None, options: dict) -> None:
    loop, h0, x, cand_idx, alive, n_passes = _loop_and_state(candidate_tokens, **options)

    def fresh() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return x.clone(), alive.clone(), torch.tensor([SEED, 0], device=DEVICE)

    xe, ae, se = fresh()
    eager = loop(h0, xe, cand_idx, ae, n_passes, se)[0].clone()
    assert loop.capture() == (DEVICE == "cuda")
    xg, ag, sg = fresh()
    graphed = loop(h0, xg, cand_idx, ag, n_passes, sg)[0]
    assert torch.equal(graphed, eager) and torch.equal(xg, xe) and torch.equal(ag, ae) and torch.equal(sg, se)


def test_rejects_bad_arguments() -> None:
    model, g = _model_and_sampler(0)
    ad = as_adapter(model)
    kw = {"batch_size": 2, "seq_len": 5, "num_candidates": 3, "num_passes": K, "temperature": 0.0,
          "mask_token_id": ad.mask_token_id}
    with pytest.raises(ValueError, match="alg"):
        AdjustLoop(g, ad.embed_tokens.weight, ad.lm_head_weight, alg="random", **kw)
    with pytest.raises(ValueError, match="backend"):
        AdjustLoop(g, ad.embed_tokens.weight, ad.lm_head_weight, backend="cuda", **kw)
    with pytest.raises(ValueError, match="candidate_tokens"):
        AdjustLoop(g, ad.embed_tokens.weight, ad.lm_head_weight, candidate_tokens=0, **kw)
    loop = AdjustLoop(g, ad.embed_tokens.weight, ad.lm_head_weight, **kw)
    h0, x = torch.zeros(2, 5, 32, device=DEVICE), torch.zeros(2, 5, dtype=torch.long, device=DEVICE)
    cand = torch.zeros(2, 3, dtype=torch.long, device=DEVICE)
    alive = torch.ones(2, 3, dtype=torch.bool, device=DEVICE)
    n = torch.ones(2, dtype=torch.long, device=DEVICE)
    with pytest.raises(ValueError, match="cand_idx"):
        loop(h0, x, cand[:, :2], alive, n, torch.tensor([0, 0], device=DEVICE))
    with pytest.raises(TypeError, match="seed_offset"):
        loop(h0, x, cand, alive, n, torch.tensor([0], device=DEVICE))
