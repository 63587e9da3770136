"""A small autoregressive judge LM: NLL of samples under it, and the verifier of the EDLM / APD baselines.

Two are shipped: ``text`` (the ``judge_nll`` metric of the text testbed, and the text testbed's
EDLM / APD judge) and ``tasks`` (the list tasks' EDLM / APD judge, trained on ``prompt +
completion`` sequences of the testbed's examples). As an `adjust.decoding.judge.ARJudge` a
judge gives next-token logits over the engine's left-padded sequences.

The judge is a tiny **causal** transformer (the building blocks of
:mod:`adjust.models.layers` — RMSNorm, RoPE, SwiGLU — with a causal mask and residual
dropout) trained by next-token cross-entropy on windows of the corpus's *train*
split, with the same BPE tokenizer as the testbed (its fingerprint is saved in
``config.json`` and checked before scoring). An autoregressive model is a judge
independent of the masked-diffusion models it scores: it never saw their samples and
factorises the joint in a different order.

Scoring (:meth:`Judge.token_nll`): each sample is read as ``[BOS] + ids`` and the NLL of
every token given BOS and the tokens before it is returned, in nats. Everything from
the first EOS on is dropped, as :func:`adjust.data.tokenizer.decode` drops it from the
text: the corpus has no EOS (so the judge never learnt one) and the text testbed's
completions are fixed-length windows, so an EOS only marks where a sample stops.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from adjust.checkpoint import ASSETS as _ASSETS
from adjust.checkpoint import load_config, load_weights, resolve, save_checkpoint
from adjust.data.testbed import StableRandom, Testbed
from adjust.data.text import TextCorpus
from adjust.data.tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID, tokenizer_fingerprint
from adjust.decoding.judge import ARJudge, left_aligned
from adjust.models.layers import Attention, LayerConfig, RMSNorm, SwiGLU, apply_rope, rope_cos_sin
from adjust.progress import progress_bar

LOG_NAME = "train_log.jsonl"
# Example seeds of the judges trained on example testbeds: far from the base models' and the evaluation's.
JUDGE_SEED = 70_000_000
ASSETS = _ASSETS / "judges"


@dataclass
class JudgeConfig:
    vocab_size: int
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 384
    dropout: float = 0.3  # held-out NLL 3.45 → 3.37 over 0.1 at 1200 steps: the corpus is small
    max_seq_len: int = 65  # BOS + the longest window it was trained on
    rope_theta: float = 10000.0
    tokenizer_fingerprint: str | None = None
    extra: dict = field(default_factory=dict)  # provenance: corpus, command, held-out NLL, ...

    @property
    def layer_config(self) -> LayerConfig:
        return LayerConfig(hidden_size=self.hidden_size, num_heads=self.num_heads, num_kv_heads=self.num_heads,
                           head_dim=self.hidden_size // self.num_heads, intermediate_size=self.intermediate_size,
                           rope_theta=self.rope_theta)


class _CausalAttention(Attention):
    """`layers.Attention` with a causal mask (no padding mask: padding is only ever on the right)."""

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        c = self.cfg
        q = self.q_proj(x).view(B, L, c.num_heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, L, c.num_kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, L, c.num_kv_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(B, L, c.num_heads * c.head_dim))


class _CausalBlock(nn.Module):
    """Pre-norm block as `layers.DecoderLayer`, causal, with dropout on both residual branches.

    The train split is only ~74k tokens: without dropout a 1M-parameter model overfits it.
    """

    def __init__(self, cfg: LayerConfig, dropout: float):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = _CausalAttention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class Judge(nn.Module, ARJudge):
    """A tiny causal transformer LM; see the module docstring. As an `ARJudge` it is the
    verifier / energy model of the EDLM and APD baselines (`adjust.decoding`)."""

    def __init__(self, config: JudgeConfig):
        super().__init__()
        self.config = config
        lc = config.layer_config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(_CausalBlock(lc, config.dropout) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=1.0)  # as the base model: unit-scale embeddings train faster

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, L, V]: position i predicts token i + 1."""
        if input_ids.shape[1] > self.config.max_seq_len:
            raise ValueError(f"sequence of {input_ids.shape[1]} tokens (with BOS) is longer than the judge's "
                             f"max_seq_len={self.config.max_seq_len}")
        x = self.drop(self.embed_tokens(input_ids))
        pos = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        cos, sin = rope_cos_sin(pos, self.config.hidden_size // self.config.num_heads, self.config.rope_theta,
                                x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.norm(x))

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @torch.no_grad()
    def next_token_logits(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L, V] logits of ``ids[b, i]`` given the real tokens before it (`ARJudge`); left padding is
        moved out of the way (the judge has no padding mask), mask tokens are read as PAD (they only
        ever follow the positions read: attention is causal)."""
        was_training = self.training
        self.eval()
        clean = torch.where((ids < self.config.vocab_size) & (ids != MASK_ID), ids, PAD_ID)
        aligned, shift = left_aligned(clean, attention_mask, PAD_ID)
        out = self(aligned[:, :-1]).float()
        nxt = torch.cat([torch.zeros_like(out[:, :1]), out], 1)  # aligned position j: logits of token j
        j = torch.arange(ids.shape[1], device=ids.device)[None] - shift[:, None]
        got = nxt.gather(1, j.clamp(min=0)[..., None].expand(-1, -1, nxt.shape[-1]))
        self.train(was_training)
        return got.masked_fill((j < 1)[..., None], 0.0)

    def loss(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of windows `ids` [B, L] (each read after a BOS; PAD, the
        right padding of unequal sequences, is not scored)."""
        x = torch.cat([torch.full_like(ids[:, :1], BOS_ID), ids[:, :-1]], dim=1)
        return F.cross_entropy(self(x).flatten(0, 1).float(), ids.flatten(), ignore_index=PAD_ID)

    @torch.no_grad()
    def token_nll(self, samples: Sequence[Sequence[int]], batch_size: int = 256) -> list[np.ndarray]:
        """Per-token NLL (nats) of each sample given BOS, up to (not including) its first EOS."""
        was_training = self.training
        self.eval()
        rows = [[int(t) for t in s] for s in samples]
        rows = [r[: r.index(EOS_ID)] if EOS_ID in r else r for r in rows]
        out: list[np.ndarray] = []
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            width = max((len(r) for r in chunk), default=0)
            if width == 0:
                out += [np.zeros(0)] * len(chunk)
                continue
            # Right padding: causal attention keeps it from touching the real tokens.
            ids = torch.tensor([r + [PAD_ID] * (width - len(r)) for r in chunk])
            x = torch.cat([torch.full((len(chunk), 1), BOS_ID), ids[:, :-1]], dim=1)
            logp = torch.log_softmax(self(x).float(), dim=-1)
            nll = -logp.gather(-1, ids[..., None])[..., 0]
            out += [nll[j, : len(r)].numpy().astype(np.float64) for j, r in enumerate(chunk)]
        self.train(was_training)
        return out

    def nll(self, samples: Sequence[Sequence[int]], batch_size: int = 256) -> np.ndarray:
        """Mean per-token NLL (nats) of each sample (see `token_nll`); NaN for a sample with no tokens."""
        return np.array([t.mean() if len(t) else math.nan for t in self.token_nll(samples, batch_size)])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, path: str | Path) -> Path:
        """Write config.json + model.safetensors to the folder `path`."""
        save_checkpoint(path, self, "Judge", asdict(self.config))
        return Path(path)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "text") -> Judge:
        """Load a folder written by `save_pretrained`, or a shipped judge by name (default: ``"text"``)."""
        path = resolve(name_or_path, "judges")
        judge = cls(JudgeConfig(**load_config(path, "Judge")))
        load_weights(judge, path)
        return judge.eval()

    def check_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Raise ValueError unless `tokenizer` is the one the judge was trained with."""
        got = tokenizer_fingerprint(tokenizer)
        if got != self.config.tokenizer_fingerprint:
            raise ValueError(f"the judge was trained with tokenizer {self.config.tokenizer_fingerprint}, not {got}: "
                             "retrain it with `adjust train-judge` for this corpus/tokenizer")


@dataclass
class JudgeTrainConfig:
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 100
    eval_every: int = 200
    seed: int = 0


def _lr_at(step: int, cfg: JudgeTrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))


def heldout_windows(testbed: TextCorpus, length: int) -> list[list[int]]:
    """The held-out token stream cut into consecutive `length`-token windows (every token scored once)."""
    ids = testbed.ids["heldout"]
    return [ids[i : i + length].tolist() for i in range(0, len(ids) - length + 1, length)]


def heldout_nll(judge: Judge, windows: list[list[int]]) -> float:
    """Token-weighted mean NLL (nats/token) of `windows`."""
    return float(np.concatenate(judge.token_nll(windows)).mean())


def _sequence_source(testbed: Testbed, num_examples: int, seed: int):
    """(batch drawer, held-out sequences, longest length) from ``prompt + completion`` examples of a testbed
    without a token stream (``tasks``, JSONL): the pool and the held-out set use seeds of their own."""
    pool = [e.prompt + e.completion for e in testbed.examples(num_examples, seed=JUDGE_SEED + seed)]
    heldout = [e.prompt + e.completion for e in testbed.examples(512, seed=JUDGE_SEED + 1_000_000 + seed)]
    width = max(len(r) for r in pool + heldout)

    def draw(rng: StableRandom, batch_size: int) -> torch.Tensor:
        rows = [pool[rng.below(len(pool))] for _ in range(batch_size)]
        return torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows])

    return draw, heldout, width


def _window_source(testbed: TextCorpus, train_length: int):
    """(batch drawer, held-out windows, window length) of a text corpus's token streams."""
    train_ids = testbed.ids["train"]
    if train_length < testbed.gen_length or train_length > len(train_ids):
        raise ValueError(f"train_length must be in [gen_length={testbed.gen_length}, {len(train_ids)}], "
                         f"got {train_length}")

    def draw(rng: StableRandom, batch_size: int) -> torch.Tensor:
        starts = [rng.below(len(train_ids) - train_length + 1) for _ in range(batch_size)]
        return torch.from_numpy(np.stack([train_ids[s : s + train_length] for s in starts]))

    return draw, heldout_windows(testbed, testbed.gen_length), train_length


def train_judge(
    testbed: Testbed,
    out_dir: str | Path,
    judge_config: dict | None = None,
    train: JudgeTrainConfig | None = None,
    train_length: int = 64,
    progress: bool = True,
    provenance: dict | None = None,
    num_examples: int = 20_000,
) -> Judge:
    """Train a judge on `testbed`; save to `out_dir`.

    A :class:`TextCorpus` (``get_testbed("text")``) trains on random `train_length`-token windows of its
    train split, and the held-out NLL is measured on the held-out split cut into
    ``testbed.gen_length``-token windows — the length of the samples the judge scores. Any other
    testbed (``tasks``) trains on ``prompt + completion`` sequences of `num_examples` examples and
    measures 512 others. The held-out NLL is logged with the loss to ``train_log.jsonl``; the final
    value is stored in ``config.extra["heldout_nll"]``.
    """
    cfg = train or JudgeTrainConfig()
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise ValueError(f"steps and batch_size must be ≥ 1, got {cfg.steps} and {cfg.batch_size}")
    if isinstance(testbed, TextCorpus):
        draw, heldout, length = _window_source(testbed, train_length)
        source = {"corpus_fingerprint": testbed.corpus_fingerprint, "train_length": train_length}
    else:
        draw, heldout, length = _sequence_source(testbed, num_examples, cfg.seed)
        source = {"num_examples": num_examples, "train_length": length}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jc = JudgeConfig(vocab_size=testbed.tokenizer.get_vocab_size(), max_seq_len=length + 1,
                     tokenizer_fingerprint=tokenizer_fingerprint(testbed.tokenizer),
                     extra={"testbed": testbed.name, **source, **(provenance or {})}, **(judge_config or {}))
    torch.manual_seed(cfg.seed)
    judge = Judge(jc)
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    rng = StableRandom(cfg.seed)
    log = (out / LOG_NAME).open("w")
    log.write(json.dumps({"event": "start", "judge": asdict(jc), "train": asdict(cfg),
                          "params": judge.num_parameters(), "heldout_windows": len(heldout)}) + "\n")
    bar = progress_bar(range(cfg.steps), desc="train-judge", disable=not progress)
    t0, ema = time.perf_counter(), None
    judge.train()
    for step in bar:
        ids = draw(rng, cfg.batch_size)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = judge.loss(ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(judge.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            held = heldout_nll(judge, heldout)
            rec = {"step": step + 1, "loss": round(ema, 5), "heldout_nll": round(held, 5), "lr": _lr_at(step, cfg),
                   "seconds": round(time.perf_counter() - t0, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.write(f"step {step + 1}: train {ema:.4f}  held-out NLL {held:.4f} nats/token")
    jc.extra.update(heldout_nll=round(held, 5), train_seconds=round(time.perf_counter() - t0, 1), steps=cfg.steps)
    log.close()
    judge.eval()
    judge.save_pretrained(out)
    return judge
