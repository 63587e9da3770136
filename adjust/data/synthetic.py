"""A synthetic language with an exactly computable likelihood (testbed ``"synthetic"``).

The language is a fixed hidden Markov model, a constant of the package built from
``LANGUAGE_SEED`` by :func:`_build_hmm` (integer weights only, so it is
bit-identical everywhere):

* 12 hidden states, 32 emitted symbols, word tokens ``"a0" .. "a31"`` (ids 4..35);
* every symbol has one home state (a random partition: 2-3 symbols per state) and
  half of the states also emit one symbol of another state, so emissions overlap
  and the state is genuinely hidden: each state emits 2-4 symbols;
* each state moves to its ring successor ``s+1 mod 12`` plus 1-2 random states (so
  the chain is irreducible), and any state may start;
* every allowed entry has an integer weight 1..4, normalised per row.

Most strings are impossible under it (a uniformly random 16-symbol string is valid
with probability ~1e-9), so the validity rate of samples and their exact NLL under
the generator measure how far a sampler is from the true joint distribution.
Sequences are unconditional: the prompt is empty (BOS only) and the completion is
``gen_length`` symbols with no EOS.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from adjust.data.testbed import Example, Prompt, StableRandom
from adjust.decoding.judge import ARJudge
from adjust.data.tokenizer import SPECIAL_TOKENS, word_tokenizer

LANGUAGE_SEED = 1729
N_STATES = 12
N_SYMBOLS = 32
SYMBOLS: tuple[str, ...] = tuple(f"a{i}" for i in range(N_SYMBOLS))
SYMBOL_OFFSET = len(SPECIAL_TOKENS)  # token id of symbol k is k + SYMBOL_OFFSET
# Emission smoothing for ``nll_smoothed``: finite for every symbol string, ranks
# near-valid strings above garbage while -inf/valid stays the primary measure.
SMOOTHING = 0.01


def _build_hmm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer weights (initial [S], transition [S, S], emission [S, V]) of the language."""
    rng = StableRandom(LANGUAGE_SEED)
    emit = np.zeros((N_STATES, N_SYMBOLS), dtype=np.int64)
    trans = np.zeros((N_STATES, N_STATES), dtype=np.int64)
    perm = rng.shuffled(range(N_SYMBOLS))
    for s in range(N_STATES):
        own = perm[s::N_STATES]
        for k in own:
            emit[s, k] = 1 + rng.below(4)
        if rng.random() < 0.5:
            borrowed = rng.choice([k for k in range(N_SYMBOLS) if k not in own])
            emit[s, borrowed] = 1 + rng.below(4)
        nxt = (s + 1) % N_STATES
        others = rng.sample([t for t in range(N_STATES) if t != nxt], 1 + rng.below(2))
        for t in [nxt, *others]:
            trans[s, t] = 1 + rng.below(4)
    init = np.array([1 + rng.below(4) for _ in range(N_STATES)], dtype=np.int64)
    return init, trans, emit


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    """log(sum(exp(a))) along ``axis``; -inf where every term is -inf."""
    m = a.max(axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(a - m).sum(axis=axis)) + np.squeeze(m, axis)


def _log(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(p)


class HMMLanguage:
    """Testbed ``"synthetic"``: unconditional strings of the package's fixed HMM language.

    ``score()`` returns, per sample: ``log_prob`` (exact, -inf if impossible),
    ``valid`` (1.0 if ``log_prob`` is finite), ``nll`` (``-log_prob / len``, inf if
    invalid) and ``nll_smoothed`` (the same with emissions mixed with a uniform
    ``SMOOTHING`` share, finite for any string of symbols).
    """

    name = "synthetic"

    def __init__(self, gen_length: int = 16) -> None:
        if gen_length < 1:
            raise ValueError(f"gen_length must be positive, got {gen_length}")
        self.gen_length = gen_length
        self.tokenizer = word_tokenizer(SYMBOLS)
        self._init_w, self._trans_w, self._emit_w = _build_hmm()
        self.initial = self._init_w / self._init_w.sum()
        self.transition = self._trans_w / self._trans_w.sum(1, keepdims=True)
        self.emission = self._emit_w / self._emit_w.sum(1, keepdims=True)

    def sample(self, n: int, seed: int, length: int | None = None) -> np.ndarray:
        """``n`` strings of ``length`` (default ``gen_length``) symbols: token ids, int64 ``[n, length]``."""
        length = self.gen_length if length is None else length
        rng = StableRandom(seed)
        u = np.array([rng.random() for _ in range(n * length * 2)]).reshape(n, length, 2)
        out = np.empty((n, length), dtype=np.int64)
        state = self._draw(self._init_w[None].repeat(n, 0), u[:, 0, 0]) if length else None
        for t in range(length):
            if t:
                state = self._draw(self._trans_w[state], u[:, t, 0])
            out[:, t] = self._draw(self._emit_w[state], u[:, t, 1])
        return out + SYMBOL_OFFSET

    @staticmethod
    def _draw(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One index per row of integer ``weights`` [n, k], by inverse CDF on uniforms ``u``."""
        cum = weights.cumsum(1)
        # Integer arithmetic, so zero-weight entries can never be drawn.
        r = np.minimum((u * cum[:, -1]).astype(np.int64), cum[:, -1] - 1)
        return (cum <= r[:, None]).sum(1)

    def log_probs(self, ids: np.ndarray | Sequence[Sequence[int]], smoothing: float = 0.0) -> np.ndarray:
        """Exact log-probabilities of a batch of token-id strings ``[B, L]`` (forward algorithm, log space).

        A string holding any non-symbol id (PAD, BOS, EOS, MASK) has probability 0.
        With ``smoothing`` = ε the emissions are ``(1 - ε) B + ε / V``.
        """
        x = np.asarray(ids, dtype=np.int64)
        if x.ndim != 2:
            raise ValueError(f"expected a [B, L] batch of ids, got shape {x.shape}")
        if x.shape[1] == 0:
            return np.zeros(x.shape[0])
        sym = x - SYMBOL_OFFSET
        is_symbol = (sym >= 0) & (sym < N_SYMBOLS)
        emission = (1.0 - smoothing) * self.emission + smoothing / N_SYMBOLS
        log_emit = _log(emission)[:, np.where(is_symbol, sym, 0)].transpose(1, 2, 0)  # [B, L, S]
        log_emit = np.where(is_symbol[..., None], log_emit, -np.inf)
        log_trans = _log(self.transition)
        alpha = _log(self.initial)[None] + log_emit[:, 0]
        for t in range(1, x.shape[1]):
            alpha = _logsumexp(alpha[:, :, None] + log_trans[None], axis=1) + log_emit[:, t]
        return _logsumexp(alpha, axis=1)

    def log_prob(self, ids: Sequence[int], smoothing: float = 0.0) -> float:
        """Exact log-probability of one token-id string (-inf if impossible); see :meth:`log_probs`."""
        return float(self.log_probs([list(ids)], smoothing)[0])

    def judge(self, smoothing: float = SMOOTHING) -> HMMJudge:
        """The language's exact conditionals as the `ARJudge` of the EDLM / APD baselines."""
        return HMMJudge(self, smoothing)

    def examples(self, n: int, seed: int) -> list[Example]:
        """``n`` unconditional examples: empty prompt, ``gen_length`` sampled symbols."""
        return [Example(prompt=[], completion=row.tolist()) for row in self.sample(n, seed)]

    def prompts(self, n: int, seed: int) -> list[Prompt]:
        """``n`` empty (BOS-only) prompts; ``seed`` is unused since they are all alike."""
        return [Prompt(ids=[], meta={"testbed": self.name}) for _ in range(n)]

    def score(self, prompt: Prompt, completion: list[int]) -> dict[str, float]:
        """Exact likelihood metrics of ``completion`` (see the class docstring)."""
        n = max(len(completion), 1)
        lp, lp_smooth = self.log_prob(completion), self.log_prob(completion, SMOOTHING)
        return {
            "log_prob": float(lp),
            "valid": float(np.isfinite(lp)),
            "nll": float(-lp / n),
            "nll_smoothed": float(-lp_smooth / n),
        }


class HMMJudge(ARJudge):
    """Exact next-symbol conditionals p(x_t | x_<t) of the HMM language (forward filtering).

    The string is every real token after the first (BOS). Emissions are smoothed with a uniform
    ``smoothing`` share, as for ``nll_smoothed``, so that any symbol string keeps a finite
    likelihood (EDLM compares two of them; APD mixes these logits with the model's). Non-symbol
    ids (PAD, BOS, EOS, MASK) have probability 0; after one, every logit is -inf.
    """

    def __init__(self, language: HMMLanguage, smoothing: float = SMOOTHING) -> None:
        self.vocab_size = SYMBOL_OFFSET + N_SYMBOLS
        self.initial = torch.tensor(language.initial, dtype=torch.float64)
        self.transition = torch.tensor(language.transition, dtype=torch.float64)
        self.emission = torch.tensor((1.0 - smoothing) * language.emission + smoothing / N_SYMBOLS, dtype=torch.float64)

    @torch.no_grad()
    def next_token_logits(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        B, L = ids.shape
        device = ids.device
        out = torch.zeros((B, L, self.vocab_size), dtype=torch.float64)
        ids, real = ids.cpu(), attention_mask.cpu().bool()
        started = real.long().cumsum(-1) > 1  # positions of the string: real tokens after BOS
        belief = self.initial.expand(B, -1).clone()  # P(state of the next symbol | symbols so far)
        for t in range(L):
            emit = belief @ self.emission  # [B, symbols]
            logits = torch.full((B, self.vocab_size), float("-inf"), dtype=torch.float64)
            logits[:, SYMBOL_OFFSET:] = torch.log(emit)
            out[:, t] = torch.where(started[:, t, None], logits, 0.0)
            sym = (ids[:, t] - SYMBOL_OFFSET).clamp(0, N_SYMBOLS - 1)
            is_sym = (ids[:, t] >= SYMBOL_OFFSET) & (ids[:, t] < SYMBOL_OFFSET + N_SYMBOLS)
            post = belief * self.emission[:, sym].T * is_sym[:, None]
            total = post.sum(-1, keepdim=True)
            nxt = torch.where(total > 0, post / total.clamp(min=1e-300), 0.0) @ self.transition
            belief = torch.where(started[:, t, None], nxt, belief)  # BOS / padding: nothing observed yet
        return out.to(device)
