"""Engine behaviour: determinism, pass counts, blocks, padding, infilling, bad input."""

import math
import warnings

import pytest
import torch

import adjust
from conftest import perturbed_sampler, tiny_mdlm

MASK = 3


@pytest.fixture(scope="module")
def model():
    return tiny_mdlm(vocab_size=12, seed=0, sharpen=5.0)


def test_temperature_zero_is_deterministic_argmax(model):
    a = adjust.generate(model, K=2, max_new_tokens=6, batch_size=3, temperature=0.0, seed=1)
    b = adjust.generate(model, K=2, max_new_tokens=6, batch_size=3, temperature=0.0, seed=99)
    assert torch.equal(a.sequences, b.sequences)
    # every committed token is the argmax of the logits at the state it was committed in
    out = adjust.generate(model, K=1, max_new_tokens=6, batch_size=1, temperature=0.0, return_history=True)
    x = torch.tensor([[1] + [MASK] * 6])
    for rec in out.history:
        logits = model(x)[0]
        logits[:, MASK] = float("-inf")
        (pos,), (tok,) = rec.positions[0], rec.tokens[0]
        assert tok == logits[pos].argmax().item()
        x[0, pos] = tok
    assert torch.equal(x, out.sequences)


def test_same_seed_same_tokens_different_seed_differs(model):
    kw = dict(K=3, max_new_tokens=9, batch_size=4, temperature=1.0, top_p=0.95)
    a = adjust.generate(model, seed=7, **kw).sequences
    assert torch.equal(a, adjust.generate(model, seed=7, **kw).sequences)
    assert not torch.equal(a, adjust.generate(model, seed=8, **kw).sequences)


@pytest.mark.parametrize("K,n,block", [(1, 6, None), (4, 10, None), (3, 12, 4), (8, 16, 8), (5, 9, 3)])
def test_base_forwards_is_ceil_n_over_k_per_block(model, K, n, block):
    out = adjust.generate(model, K=K, max_new_tokens=n, batch_size=2, block_length=block, seed=0)
    blocks = 1 if block is None else n // block
    per_block = n if block is None else block
    assert out.base_forwards == blocks * math.ceil(per_block / K)
    assert out.sampler_passes == 0
    assert not (out.sequences == MASK).any()
    assert out.tokens_generated == 2 * n


def test_blocks_are_filled_left_to_right(model):
    out = adjust.generate(model, K=2, max_new_tokens=8, block_length=4, batch_size=3, seed=0)
    order = out.commit_pass[:, 1:]
    assert (order[:, :4].max(-1).values < order[:, 4:].min(-1).values).all()


def test_left_padded_batch_equals_rows_alone_at_t0(model):
    prompts = [[1, 5, 6, 7], [1, 8], [1, 9, MASK, 10]]
    batch = adjust.generate(model, prompts, K=2, max_new_tokens=5, temperature=0.0)
    assert batch.prompt_length == 4
    for i, p in enumerate(prompts):
        alone = adjust.generate(model, [p], K=2, max_new_tokens=5, temperature=0.0)
        row = batch.sequences[i, 4 - len(p):]
        assert torch.equal(row, alone.sequences[0]), i


def test_infilling_fills_prompt_masks_and_keeps_the_rest(model):
    prompt = torch.tensor([[1, 5, MASK, 6, MASK, 7]])
    out = adjust.generate(model, prompt, K=1, temperature=1.0, seed=3)  # max_new_tokens defaults to 0
    assert out.sequences.shape == prompt.shape
    keep = prompt != MASK
    assert torch.equal(out.sequences[keep], prompt[keep])
    assert not (out.sequences == MASK).any()
    assert out.base_forwards == 2


def test_history_lists_a_parallel_step_in_selection_order(model):
    out = adjust.generate(model, K=5, max_new_tokens=5, batch_size=2, seed=0, return_history=True, alg="entropy")
    x = torch.tensor([[1] + [MASK] * 5])
    logits = model(x)[0].double()
    logits[:, MASK] = float("-inf")
    p = torch.softmax(logits, -1)
    neg_ent = torch.special.xlogy(p, p).sum(-1)
    for b in range(2):
        pos = out.history[0].positions[b]
        assert sorted(pos) == [1, 2, 3, 4, 5]
        scores = [neg_ent[i].item() for i in pos]
        assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:])), scores


def test_history_accounts_for_every_committed_token(model):
    out = adjust.generate(model, K=3, max_new_tokens=7, batch_size=2, seed=0, return_history=True)
    assert len(out.history) == out.base_forwards == 3
    for b in range(2):
        pos = [p for r in out.history for p in r.positions[b]]
        assert sorted(pos) == list(range(1, 8))
        toks = [t for r in out.history for t in r.tokens[b]]
        assert toks == [out.sequences[b, p].item() for p in pos]


BAD = [
    (dict(K=0), ValueError, "K"),
    (dict(K=1.5), ValueError, "K"),
    (dict(temperature=-0.1), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(top_p=0.0), ValueError, "top_p"),
    (dict(top_p=1.2), ValueError, "top_p"),
    (dict(top_k=0), ValueError, "top_k"),
    (dict(alg="bogus"), ValueError, "alg"),
    (dict(alg_temp=-1.0), ValueError, "alg_temp"),
    (dict(max_new_tokens=-1), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=None), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=0), ValueError, "max_new_tokens"),
    (dict(max_new_tokens=10, block_length=3), ValueError, "block_length"),
    (dict(block_length=0), ValueError, "block_length"),
    (dict(max_new_tokens=100), ValueError, "context"),
    (dict(input_ids=torch.tensor([[1.0, 5.0]])), TypeError, "input_ids"),
    (dict(input_ids=torch.tensor([[1, 99]])), ValueError, "input_ids"),
    (dict(input_ids=torch.tensor([[1, -2]])), ValueError, "input_ids"),
    (dict(input_ids=torch.zeros(0, 3, dtype=torch.long)), ValueError, "input_ids"),
    (dict(input_ids=[]), ValueError, "input_ids"),
    (dict(input_ids=[[1, "a"]]), TypeError, "input_ids"),
    (dict(input_ids=torch.ones(2, 2, 2, dtype=torch.long)), ValueError, "input_ids"),
    (dict(input_ids=torch.tensor([[1, 5]]), attention_mask=torch.ones(1, 3)), ValueError, "attention_mask"),
    (dict(input_ids=torch.tensor([[1, 5]]), attention_mask=torch.zeros(1, 2)), ValueError, "attention_mask"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(seed="x"), TypeError, "seed"),
    (dict(backend="cuda-magic"), ValueError, "backend"),
    # issue 17
    (dict(input_ids=[[1], [1, 5]], batch_size=3), ValueError, "batch_size=3 contradicts the 2 prompts"),
    (dict(input_ids=torch.tensor([[1, 5]]), batch_size=2), ValueError, "batch_size=2 contradicts the 1 prompts"),
    (dict(input_ids=torch.tensor([[1, 5]]), attention_mask=torch.tensor([[1, 2]])), ValueError,
     "attention_mask must hold only 0 and 1, got 2"),
    (dict(input_ids=torch.tensor([[1, 5]]), attention_mask=torch.tensor([[-1, 1]])), ValueError, "attention_mask"),
    (dict(temperature=1e-40), ValueError, "temperature 1e-40 is so small"),
    (dict(sampler="tasks"), TypeError, r"sampler must be an AdjustSampler.*from_pretrained\('tasks'\)"),
    (dict(seed=2**64), ValueError, "seed must fit in 64 bits"),
    (dict(seed=-(2**63) - 1), ValueError, "seed must fit in 64 bits"),
]


@pytest.mark.parametrize("kw,err,name", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_gets_a_clear_error_naming_the_argument(model, kw, err, name):
    args = dict(max_new_tokens=4, K=2)
    args.update(kw)
    with pytest.raises(err, match=name):
        adjust.generate(model, **args)


def test_unsupported_model_type_is_refused():
    with pytest.raises(TypeError, match="model"):
        adjust.generate(torch.nn.Linear(2, 2), max_new_tokens=2)


def test_nan_logits_are_reported_not_sampled(model):
    import copy

    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.lm_head.weight[5, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        adjust.generate(broken, max_new_tokens=3)


def test_the_smallest_accepted_temperature_is_greedy(model):
    greedy = adjust.generate(model, K=2, max_new_tokens=6, batch_size=3, temperature=0)
    tiny = adjust.generate(model, K=2, max_new_tokens=6, batch_size=3, temperature=1e-30, seed=5)
    assert torch.equal(greedy.sequences, tiny.sequences)


def test_k_far_above_the_generation_length_is_clamped(model):
    sampler = perturbed_sampler(model)
    for s in (None, sampler):
        huge = adjust.generate(model, [[1, 3, 5], [1]], K=10**9, sampler=s, max_new_tokens=5, seed=2)
        full = adjust.generate(model, [[1, 3, 5], [1]], K=6, sampler=s, max_new_tokens=5, seed=2)  # 5 + 1 infill mask
        assert torch.equal(huge.sequences, full.sequences) and huge.base_forwards == 1
        assert huge.sampler_passes == full.sampler_passes


def test_left_padding_without_attention_mask_warns(model):
    padded = torch.tensor([[0, 0, 1, 5], [1, 5, 6, 7]])
    with pytest.warns(UserWarning, match="starts with the PAD id 0 but no attention_mask"):
        adjust.generate(model, padded, K=2, max_new_tokens=2, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adjust.generate(model, padded, attention_mask=(padded != 0).long(), K=2, max_new_tokens=2, seed=0)
        adjust.generate(model, padded[1:], K=2, max_new_tokens=2, seed=0)
