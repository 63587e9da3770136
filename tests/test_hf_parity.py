"""`adjust.generate` against the REAL models' own generation: Dream's `diffusion_generate`, LLaDA's `generate`.

Tiny random-weight instances of the real classes (tests/peer_models.py; skipped where
``../shared/peer-code/`` is absent). At T = 0:

- parity mode (``schedule="dream"`` / ``"llada"``, ``sample_mask=True``): every token equals
  the model's own, across algs, K, block lengths and left-padded batches, also with a head
  that makes [MASK] the argmax at some positions (both models then commit [MASK]);
- the package's own rule (``schedule="k"``, mask excluded) where it coincides with theirs.

At T > 0 the sampled distribution is checked against the model's softmax (chi-square).
``pytest tests/test_hf_parity.py -q -s`` prints one line per configuration (docs/hf_models.md).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chisquare

import adjust
from adjust.schedules import DreamSchedule
from peer_models import DREAM_IDS, LLADA_IDS, peer_module, tiny_dream, tiny_llada

DREAM_ALG = {"maskgit_plus": "confidence", "topk_margin": "margin", "entropy": "entropy"}
# Dream's diffusion_generate builds its settings from model.config, whose transformers-4 defaults
# carry top_k=50 (PretrainedConfig); the same filter is passed to adjust.generate.
DREAM_TOP_K = 50
N = 16  # new tokens per row


def prompts(ids: dict, padded: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Two full rows, or three left-padded rows of different lengths (ids of the family)."""
    bos, pad = ids["bos_token_id"], ids["pad_token_id"]
    if not padded:
        return torch.tensor([[bos, 5, 6, 7, 8], [bos, 9, 10, 11, 12]]), None
    rows = [[bos, 5, 6], [bos, 9, 10, 11, 12], [bos, 13, 14, 15]]
    width = max(map(len, rows))
    x = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return x, mask


def liking_mask(model, token: int):
    """The model with its [MASK] row of the LM head set to 1.05 × `token`'s: [MASK] wins where `token` would."""
    head = model.lm_head if model.config.model_type == "Dream" else model.model.transformer.ff_out
    mask_id = (DREAM_IDS if model.config.model_type == "Dream" else LLADA_IDS)["mask_token_id"]
    with torch.no_grad():
        head.weight[mask_id] = 1.05 * head.weight[token]
    return model


@pytest.fixture(scope="module")
def dream():
    return {"plain": tiny_dream(), "likes_mask": liking_mask(tiny_dream(), 54)}


@pytest.fixture(scope="module")
def llada():
    return {"plain": tiny_llada(), "likes_mask": liking_mask(tiny_llada(), 63)}


def report(family: str, config: str, ours: torch.Tensor, theirs: torch.Tensor, mask_id: int) -> int:
    differing = int((ours != theirs).sum())
    print(f"\n{family} {config}: tokens {ours[:, -N:].numel()}, differing {differing}, "
          f"[MASK] left in theirs {int((theirs[:, -N:] == mask_id).sum())}")
    return differing


def dream_own(model, x, mask, steps: int, alg: str, **kw) -> torch.Tensor:
    """Dream's `diffusion_generate` at T = 0."""
    attn = torch.ones_like(x) if mask is None else mask
    return model.diffusion_generate(x, attention_mask=attn, max_new_tokens=N, steps=steps, alg=alg, temperature=0.0,
                                    **kw)


def dream_own_row_by_row(model, x, mask, steps: int, alg: str, **kw) -> torch.Tensor:
    """Dream's `diffusion_generate` on each row alone (its padding dropped), left-padded back into a batch.

    Dream counts a step's commits from the batch's *mean* mask count; rows that committed
    [MASK] hold more masks than the others, and Dream then asks a row for more tokens than it
    has and writes [MASK] over committed ones. The package counts per row (adjust.schedules):
    Dream's own result for every row run alone.
    """
    mask = torch.ones_like(x) if mask is None else mask
    out = []
    for row, keep in zip(x, mask.bool()):
        alone = dream_own(model, row[keep][None], None, steps, alg, **kw)[0]
        out.append(torch.cat([row[~keep], alone]))
    return torch.stack(out)


DREAM_CONFIGS = (
    [("plain", alg, K, padded, {}) for alg in DREAM_ALG for K in (1, 3, 4) for padded in (False, True)]
    + [("plain", alg, 4, True, {"top_k": None}) for alg in DREAM_ALG]
    + [("plain", "entropy", K, True, {"eps": 1e-2}) for K in (1, 3)]
    + [("likes_mask", alg, K, padded, {}) for alg in DREAM_ALG for K in (1, 4) for padded in (False, True)]
)


@torch.no_grad()
@pytest.mark.parametrize("variant, alg, K, padded, kw", DREAM_CONFIGS,
                         ids=[f"{v}-{a}-K{k}-{'padded' if p else 'full'}{'-' + str(kw) if kw else ''}"
                              for v, a, k, p, kw in DREAM_CONFIGS])
def test_dream_parity_mode_equals_diffusion_generate_at_t0(dream, variant, alg, K, padded, kw):
    model = dream[variant]
    x, mask = prompts(DREAM_IDS, padded)
    top_k = kw.get("top_k", DREAM_TOP_K)
    eps = kw.get("eps", 1e-3)
    own = dream_own if variant == "plain" else dream_own_row_by_row
    theirs = own(model, x, mask, math.ceil(N / K), alg, top_k=top_k, eps=eps)
    ours = adjust.generate(model, x, attention_mask=mask, K=K, max_new_tokens=N, temperature=0.0,
                           alg=DREAM_ALG[alg], top_k=top_k, schedule=DreamSchedule(eps), sample_mask=True)
    config = (f"{variant} alg={alg} K={K} steps={math.ceil(N / K)} padded={padded} top_k={top_k} eps={eps}"
              f"{' (theirs row by row)' if own is dream_own_row_by_row else ''}")
    assert report("dream", config, ours.sequences, theirs, DREAM_IDS["mask_token_id"]) == 0


@torch.no_grad()
@pytest.mark.parametrize("padded", [False, True])
def test_dream_one_step_equals_every_alg_including_origin(dream, padded):
    """With one step (K ≥ N) every rule commits all masks at once: the default rule, and Dream's random `origin`."""
    model = dream["plain"]
    x, mask = prompts(DREAM_IDS, padded)
    ours = adjust.generate(model, x, attention_mask=mask, K=N, max_new_tokens=N, temperature=0.0, top_k=DREAM_TOP_K)
    for alg in ("origin", *DREAM_ALG):
        theirs = dream_own(model, x, mask, 1, alg, top_k=DREAM_TOP_K)
        assert report("dream", f"default rule K={N} steps=1 alg={alg} padded={padded}", ours.sequences, theirs,
                      DREAM_IDS["mask_token_id"]) == 0


def llada_own(model, x, mask, K: int, block: int, remasking: str) -> torch.Tensor:
    """LLaDA's `generate` at T = 0 with ceil(block / K) steps per block."""
    generate = peer_module("llada", "generate").generate
    steps = (N // block) * math.ceil(block / K)
    return generate(model, x, attention_mask=mask, steps=steps, gen_length=N, block_length=block, temperature=0.0,
                    remasking=remasking, mask_id=LLADA_IDS["mask_token_id"])


LLADA_CONFIGS = (
    [("plain", "low_confidence", K, block, padded) for K in (1, 3, 5) for block in (4, 8, 16)
     for padded in (False, True)]
    + [("plain", "random", K, block, True) for K, block in ((4, 4), (8, 8), (16, 16))]  # one step per block
    + [("likes_mask", "low_confidence", K, block, padded) for K, block in ((1, 8), (3, 8), (5, 16))
       for padded in (False, True)]
)


@torch.no_grad()
@pytest.mark.parametrize("variant, remasking, K, block, padded", LLADA_CONFIGS,
                         ids=[f"{v}-{r}-K{k}-block{b}-{'padded' if p else 'full'}" for v, r, k, b, p in LLADA_CONFIGS])
def test_llada_parity_mode_equals_generate_at_t0(llada, variant, remasking, K, block, padded):
    model = llada[variant]
    x, mask = prompts(LLADA_IDS, padded)
    theirs = llada_own(model, x, mask, K, block, remasking)
    # LLaDA's `random` scores are random; with one step per block every candidate is committed anyway.
    alg = "low_confidence" if remasking == "random" else remasking
    ours = adjust.generate(model, x, attention_mask=mask, K=K, max_new_tokens=N, block_length=block,
                           temperature=0.0, alg=alg, schedule="llada", sample_mask=True)
    config = f"{variant} remasking={remasking} K={K} block={block} steps/block={math.ceil(block / K)} padded={padded}"
    assert report("llada", config, ours.sequences, theirs, LLADA_IDS["mask_token_id"]) == 0


@torch.no_grad()
@pytest.mark.parametrize("K, block", [(1, 4), (2, 8), (4, 16)])
def test_llada_default_rule_equals_generate_where_k_divides_the_block(llada, K, block):
    """K | block: LLaDA's split is K per step too, and the plain model never picks [MASK], so the rules coincide."""
    model = llada["plain"]
    x, mask = prompts(LLADA_IDS, True)
    theirs = llada_own(model, x, mask, K, block, "low_confidence")
    ours = adjust.generate(model, x, attention_mask=mask, K=K, max_new_tokens=N, block_length=block,
                           temperature=0.0, alg="low_confidence")
    assert report("llada", f"default rule K={K} block={block}", ours.sequences, theirs, LLADA_IDS["mask_token_id"]) == 0


@torch.no_grad()
def test_mask_commits_happen_in_the_mask_liking_configs(dream, llada):
    """The `likes_mask` variants really exercise the [MASK] handling: their own generate leaves [MASK] in."""
    x, _ = prompts(DREAM_IDS, False)
    theirs = dream_own(dream["likes_mask"], x, None, N, "maskgit_plus", top_k=DREAM_TOP_K)
    assert bool((theirs[:, -N:] == DREAM_IDS["mask_token_id"]).any())
    x, _ = prompts(LLADA_IDS, False)
    theirs = llada_own(llada["likes_mask"], x, None, 1, 8, "low_confidence")
    assert bool((theirs[:, -N:] == LLADA_IDS["mask_token_id"]).any())
    # and the package's default never commits it
    out = adjust.generate(llada["likes_mask"], x, K=1, max_new_tokens=N, block_length=8, temperature=0.0)
    assert not bool((out.sequences == LLADA_IDS["mask_token_id"]).any())


def chi_square_p(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    """Goodness of fit of sampled `tokens` to `probs` (bins with expected count < 5 pooled)."""
    counts = torch.bincount(tokens, minlength=probs.numel()).double()
    expected = probs.double() / probs.double().sum() * tokens.numel()
    big = expected >= 5
    f_obs = torch.cat([counts[big], counts[~big].sum()[None]])
    f_exp = torch.cat([expected[big], expected[~big].sum()[None]])
    if f_exp[-1] < 5:  # nothing worth a bin left: fold it into the largest one
        f_obs, f_exp = f_obs[:-1].clone(), f_exp[:-1].clone()
        f_obs[f_obs.argmax()] += counts[~big].sum()
        f_exp[f_exp.argmax()] += expected[~big].sum()
    return float(chisquare(f_obs.numpy(), f_exp.numpy()).pvalue)


@torch.no_grad()
@pytest.mark.parametrize("family", ["dream", "llada"])
def test_t1_samples_follow_the_models_softmax_like_their_own(family, dream, llada):
    """One masked position, 4000 rows: ours (sample_mask) and theirs both follow softmax(logits) over the full vocabulary."""
    rows = 4000
    if family == "dream":
        model, ids = dream["plain"], DREAM_IDS
    else:
        model, ids = llada["plain"], LLADA_IDS
    prompt = torch.tensor([[ids["bos_token_id"], 5, 6, 7]])
    x = torch.cat([prompt, torch.tensor([[ids["mask_token_id"]]])], 1)
    if family == "dream":
        probs = torch.softmax(model(x, "full").logits[0, -2], -1)  # Dream: position i is predicted at i - 1
    else:
        probs = torch.softmax(model(x).logits[0, -1].double(), -1).float()
    ours = adjust.generate(model, prompt.expand(rows, -1), K=1, max_new_tokens=1, temperature=1.0,
                           sample_mask=True, seed=0).sequences[:, -1]
    torch.manual_seed(1)  # their samplers draw from the global generator (another stream than ours)
    if family == "dream":
        theirs = model.diffusion_generate(prompt.expand(rows, -1), attention_mask=torch.ones(rows, 4, dtype=torch.long),
                                          max_new_tokens=1, steps=1, alg="entropy", temperature=1.0, top_k=None)
    else:
        theirs = peer_module("llada", "generate").generate(model, prompt.expand(rows, -1), steps=1, gen_length=1,
                                                            block_length=1, temperature=1.0,
                                                            mask_id=ids["mask_token_id"])
    p_ours, p_theirs = chi_square_p(ours, probs), chi_square_p(theirs[:, -1], probs)
    print(f"\n{family} T=1, {rows} draws at one position: chi-square p ours {p_ours:.3f}, theirs {p_theirs:.3f}")
    assert p_ours > 1e-3 and p_theirs > 1e-3
