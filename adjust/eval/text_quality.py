"""Set-level quality of text samples: MAUVE vs exact K = 1 samples, and NLL under a judge.

:class:`TextQuality` is a callable for ``EvalConfig.extra_metrics``. For every record of
:func:`adjust.eval.run.evaluate` it adds

- ``mauve``: MAUVE (:mod:`adjust.eval.mauve`) of the record's decoded completions vs a
  *reference* set of K = 1 (exact) samples of the same base model at the record's
  temperature — 1 means indistinguishable from exact sampling;
- ``mauve_ceiling``: MAUVE of a second, independent K = 1 set vs the same reference — the
  score exact sampling itself gets with this many samples, i.e. the best ``mauve`` can be
  read to mean (MAUVE on a few hundred samples is well below 1 even for equal distributions);
- ``judge_nll``: mean per-token NLL (nats) of the completions under the autoregressive
  judge (:mod:`adjust.eval.judge`), token-weighted, tokens from the first EOS on dropped.

The two K = 1 sets are generated once per temperature (seeds far from the evaluation's
and from each other) and cached with their embeddings, so every record at that
temperature is compared with the same reference. Everything is deterministic given
``seed``.
"""

from __future__ import annotations

import numpy as np

from adjust.data.testbed import Testbed
from adjust.data.tokenizer import decode, tokenizer_fingerprint
from adjust.eval.judge import Judge
from adjust.eval.mauve import embed, mauve_from_features
from adjust.generate import generate
from adjust.models.adapter import as_adapter

# Generation seeds of the reference sets: far from evaluate()'s (seed * 7919 + offset).
REFERENCE_SEED = 50_000_017


class TextQuality:
    """``mauve``, ``mauve_ceiling`` and ``judge_nll`` for records of `evaluate` (module docstring).

    Args:
        model: the base model the records were generated with.
        testbed: the text testbed (its tokenizer decodes completions; its ``gen_length``
            and ``prompts`` are used for the reference samples).
        judge: the judge LM; its tokenizer fingerprint must match the testbed's.
        num_reference: samples per K = 1 set (use the evaluation's ``num_samples``: MAUVE's
            bucket count follows the smaller set).
        seed: seeds the reference generations and MAUVE's k-means.
        top_p, alg: sampling settings of the reference sets — pass the evaluation's.
        batch_size: generation batch size.
    """

    def __init__(
        self,
        model,
        testbed: Testbed,
        judge: Judge,
        num_reference: int = 256,
        seed: int = 0,
        top_p: float | None = None,
        alg: str = "entropy",
        batch_size: int = 256,
    ) -> None:
        judge.check_tokenizer(testbed.tokenizer)
        model_fp = getattr(getattr(model, "config", None), "tokenizer_fingerprint", None)
        if model_fp is not None and model_fp != tokenizer_fingerprint(testbed.tokenizer):
            raise ValueError("the base model's tokenizer is not the text testbed's")
        self.model, self.testbed, self.judge = model, testbed, judge
        self.num_reference, self.seed, self.top_p, self.alg = num_reference, seed, top_p, alg
        self.batch_size = batch_size
        self._features: dict[tuple[float, int], np.ndarray] = {}
        self._ceiling: dict[float, float] = {}

    def _k1_features(self, temperature: float, which: int) -> np.ndarray:
        """Embeddings of K = 1 set `which` (0 = reference, 1 = ceiling) at `temperature`, cached."""
        key = (temperature, which)
        if key not in self._features:
            bos = as_adapter(self.model).bos_token_id
            prompts = [([bos] if bos is not None else []) + p.ids
                       for p in self.testbed.prompts(self.num_reference, seed=self.seed)]
            texts = []
            for j, i in enumerate(range(0, len(prompts), self.batch_size)):
                # One seed per (seed, set, batch): the two sets never share a random stream.
                out = generate(self.model, prompts[i : i + self.batch_size], K=1,
                               max_new_tokens=self.testbed.gen_length, temperature=temperature, top_p=self.top_p,
                               alg=self.alg, seed=REFERENCE_SEED + ((2 * self.seed + which) << 20) + j)
                texts += [decode(self.testbed.tokenizer, row) for row in out.completions.tolist()]
            self._features[key] = embed(texts)
        return self._features[key]

    def __call__(self, record: dict, completions: list[list[int]]) -> None:
        T = float(record["temperature"])
        reference = self._k1_features(T, 0)
        texts = [decode(self.testbed.tokenizer, c) for c in completions]
        record["mauve"] = mauve_from_features(embed(texts), reference, seed=self.seed)
        if T not in self._ceiling:
            self._ceiling[T] = mauve_from_features(self._k1_features(T, 1), reference, seed=self.seed)
        record["mauve_ceiling"] = self._ceiling[T]
        nll = self.judge.token_nll(completions)
        tokens = sum(len(t) for t in nll)
        record["judge_nll"] = float(np.concatenate(nll).sum() / tokens) if tokens else float("nan")
