"""Context-cached sampler passes: g updates only the step's candidate rows; the others' K/V are computed once.

What exact ADJUST can reuse across the K−1 passes of a base step. The paper's g,
``h_k = h_{k−1} + Norm_out(Layer(DownProj(concat(Norm_e(E x_k), Norm_h h_{k−1}))))``, is applied
to *every* row, and its residual output is nonzero at every row (attention mixes the committed
token into all of them). So h_{k−1} differs from h_{k−2} at every position, and with it the
layer input, keys and values of every position: **no key or value is reusable across passes**.
What is reusable, and the engines reuse: the RoPE tables and key mask (once per generation or
step), the embedding rows of unchanged tokens (a gather), and nothing else of substance.

The variant here (``generate(..., cache_context=True)``) makes more cacheable by changing g:
rows that are not candidates of the current base step (the prompt, tokens committed in earlier
steps, masks outside the current block) keep h = h0 through the step. Their tokens do not change
during the step either, so their keys and values are computed once, from (x, h0), and every pass
then runs the layer only on the C candidate rows: C queries over L keys, and C rows through the
projections and the MLP instead of L. It is an approximation of ADJUST (the sampler was trained
updating every row); its fidelity is measured by ``adjust eval ... --cache-context``
(docs/results.md). With every row a candidate it is exactly g (tested).

**What exact g can skip.** A base step's *last* sampler pass is read only at its candidate rows (their
logits), so there exact g needs every row's key and value but only the C candidate rows' queries,
attention output and MLP: both engines run it that way (`AdjustSampler.forward_rows`,
`AdjustLoop._final_rows`; `DecodingPolicy.final_pass` says which pass is last), exact at those rows.
K = 2 has only such passes.

Reference identity (tested): for candidate rows, one cached pass equals
``g(where(candidate, h, h0), x)`` at those rows; context rows are returned unchanged.
"""

from __future__ import annotations

import torch

from adjust.models.adapter import DiffusionLMAdapter


def candidate_slots(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For rows [B, L] (bool): idx [B, C], each batch row's True positions first (ascending) and then
    distinct other positions as padding, and valid [B, C] (False at the padding); C = the most True
    positions of any batch row (at least 1). Distinct padding lets results be scattered back by idx."""
    C = max(1, int(rows.sum(-1).max()))
    idx = torch.sort((~rows).to(torch.int8), dim=1, stable=True).indices[:, :C]
    return idx, rows.gather(1, idx)


class ContextCache:
    """One base step's context K/V and the candidate-only sampler pass (torch engine)."""

    def __init__(
        self,
        sampler,
        adapter: DiffusionLMAdapter,
        h0: torch.Tensor,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None,
        candidates: torch.Tensor,
    ) -> None:
        """
        Args:
            sampler: the `AdjustSampler` g.
            h0: [B, L, d] the base forward's hidden states; x: [B, L] tokens (the context rows' tokens
                must not change during the step).
            attention_mask: [B, L] (1 = real token) or None.
            candidates: [B, L] bool, the rows g updates (the step's candidates).
        """
        self.sampler, self.adapter = sampler, adapter
        self.idx, self.valid = candidate_slots(candidates)
        pos = sampler.position_ids(x, attention_mask)
        cos, sin, self.key_mask = sampler.positions(x, attention_mask, h0.dtype, pos)
        at = self.idx[..., None].expand(-1, -1, cos.shape[-1])
        self.cos, self.sin = cos.gather(1, at), sin.gather(1, at)
        layer = sampler.layer
        self.pos = pos.gather(1, self.idx)  # the candidate slots' positions, for g's position term
        u = sampler.layer_input(h0, x, adapter, pos)
        _, self.k, self.v = layer.self_attn.project(layer.input_layernorm(u), cos, sin)

    def __call__(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """h [B, L, d] after one candidate-only pass of g with tokens x: candidate rows updated, others as given."""
        s, layer = self.sampler, self.sampler.layer
        at = self.idx[..., None].expand(-1, -1, h.shape[-1])
        hc = h.gather(1, at)
        u = s.layer_input(hc, x.gather(1, self.idx), self.adapter, self.pos)
        q, kc, vc = layer.self_attn.project(layer.input_layernorm(u), self.cos, self.sin)
        kv_at = self.idx[:, None, :, None].expand_as(kc)
        keep = self.valid[:, None, :, None]
        k = self.k.scatter(2, kv_at, torch.where(keep, kc, self.k.gather(2, kv_at)))
        v = self.v.scatter(2, kv_at, torch.where(keep, vc, self.v.gather(2, kv_at)))
        u = u + layer.self_attn.attend(q, k, v, self.key_mask)
        y = u + layer.mlp(layer.post_attention_layernorm(u))
        return h.scatter(1, at, torch.where(self.valid[..., None], hc + s.norm_out(y), hc))
