"""The ADJUST sampler: the paper's recurrence, the untrained == parallel invariant, checkpoints."""

import pytest
import torch

import adjust
from adjust.models.adapter import as_adapter
from adjust.sampler import AdjustSampler
from conftest import tiny_mdlm


def _rms(v, w, eps):
    return w * v / torch.sqrt((v**2).mean(-1, keepdim=True) + eps)


def test_recurrence_matches_the_paper_on_a_hand_checked_case():
    model = tiny_mdlm(vocab_size=6, hidden_size=2, num_heads=1, num_kv_heads=1, head_dim=2, intermediate_size=4)
    ad = as_adapter(model)
    g = AdjustSampler.from_base(model)
    with torch.no_grad():
        # Make the decoder layer the identity (zero attention output and MLP output) so the
        # whole map is g(h, x) = h + w_out * rms(D [w_e rms(E x) ; w_h rms(h)]).
        g.layer.self_attn.o_proj.weight.zero_()
        g.layer.mlp.down_proj.weight.zero_()
        g.norm_out.weight.copy_(torch.tensor([0.5, 2.0]))
        g.norm_e.weight.copy_(torch.tensor([1.0, 1.0]))
        g.norm_h.weight.copy_(torch.tensor([1.0, 1.0]))
        g.down_proj.weight.copy_(torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]))
        model.embed_tokens.weight[4] = torch.tensor([3.0, 4.0])
    h = torch.tensor([[[1.0, 1.0]]])
    x = torch.tensor([[4]])
    # By hand (eps→0): rms(E x) = [3, 4] / sqrt(12.5); rms(h) = [1, 1];
    # D·[...] = [3/sqrt(12.5) + 1, 1]; rms of that, times [0.5, 2], plus h.
    u = torch.tensor([3 / 12.5**0.5 + 1.0, 1.0])
    expected = torch.tensor([1.0, 1.0]) + torch.tensor([0.5, 2.0]) * u / torch.sqrt((u**2).mean())
    out = g(h, x, ad)
    assert torch.allclose(out[0, 0], expected, atol=1e-4)
    # and the same through the module-level definition with the real (non-identity) layer
    g2 = AdjustSampler.from_base(model)
    with torch.no_grad():
        g2.norm_out.weight.fill_(1.0)
    e = ad.embed_tokens(x)
    eps = g2.layer_config.rms_norm_eps
    cat = torch.cat([_rms(e, g2.norm_e.weight, eps), _rms(h, g2.norm_h.weight, eps)], -1)
    u = cat @ g2.down_proj.weight.T
    from adjust.models.layers import rope_cos_sin

    cos, sin = rope_cos_sin(torch.zeros(1, 1, dtype=torch.long), 2, g2.layer_config.rope_theta, torch.float32)
    ref = h + _rms(g2.layer(u, cos, sin, None), g2.norm_out.weight, eps)
    assert torch.allclose(g2(h, x, ad), ref, atol=1e-5)


def test_decoder_layer_is_copied_from_the_base_and_embeddings_are_shared():
    model = tiny_mdlm(vocab_size=10)
    g = AdjustSampler.from_base(model)
    for k, v in model.layers[-1].state_dict().items():
        assert torch.equal(g.layer.state_dict()[k], v)
    names = set(g.state_dict())
    assert not any("embed" in n or "lm_head" in n for n in names)  # E and W are not copied
    assert torch.equal(g.norm_out.weight, torch.zeros_like(g.norm_out.weight))


@pytest.mark.parametrize("alg", ["entropy", "confidence", "margin", "low_confidence"])
def test_untrained_sampler_reproduces_parallel_at_t0(alg):
    model = tiny_mdlm(vocab_size=12, sharpen=4.0)
    g = AdjustSampler.from_base(model)
    kw = dict(K=4, max_new_tokens=10, batch_size=3, temperature=0.0, alg=alg, block_length=5)
    par = adjust.generate(model, **kw)
    adj = adjust.generate(model, sampler=g, **kw)
    assert torch.equal(par.sequences, adj.sequences)
    assert par.base_forwards == adj.base_forwards == 4
    assert adj.sampler_passes == 2 * (3 + 0)  # per block: passes after commits 1,2,3 then 1 leftover (no pass)


def test_untrained_sampler_picks_the_same_positions_as_parallel_at_t1():
    model = tiny_mdlm(vocab_size=12, sharpen=4.0)
    g = AdjustSampler.from_base(model)
    kw = dict(K=3, max_new_tokens=9, batch_size=4, temperature=1.0, alg="entropy", seed=5)
    par = adjust.generate(model, return_history=True, **kw)
    adj = adjust.generate(model, sampler=g, return_history=True, **kw)
    # entropy scores do not depend on the sampled token, so with h unchanged the positions
    # of each base forward are the same set; only the draws of the tokens differ.
    # (the positions do depend on earlier tokens, so compare the first forward only)
    first_par = sorted(par.history[0].positions[0])
    first_adj = sorted(p for r in adj.history if r.base_forward == 0 for p in r.positions[0])
    assert first_par == first_adj


def test_save_load_roundtrip_and_mismatch_refused(tmp_path):
    model = tiny_mdlm(vocab_size=12)
    g = AdjustSampler.from_base(model)
    with torch.no_grad():
        g.norm_out.weight.fill_(0.3)
    g.save_pretrained(tmp_path / "s")
    g2 = AdjustSampler.from_pretrained(tmp_path / "s")
    h, x = torch.randn(2, 5, 32), torch.randint(4, 12, (2, 5))
    assert torch.equal(g(h, x, as_adapter(model)), g2(h, x, as_adapter(model)))
    other = tiny_mdlm(vocab_size=14)
    with pytest.raises(ValueError, match="vocab_size"):
        adjust.generate(other, sampler=g2, K=2, max_new_tokens=4)
    (tmp_path / "s" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.safetensors"):
        AdjustSampler.from_pretrained(tmp_path / "s")


def test_sampler_on_another_dtype_is_refused():
    model = tiny_mdlm(vocab_size=12)
    g = AdjustSampler.from_base(model).to(torch.float64)
    with pytest.raises(ValueError, match="sampler.*float64"):
        adjust.generate(model, sampler=g, K=2, max_new_tokens=4)


def test_sampler_tokenizer_mismatch_is_refused():
    model = tiny_mdlm(vocab_size=12)
    model.config.tokenizer_fingerprint = "aaa"
    g = AdjustSampler.from_base(model)
    model.config.tokenizer_fingerprint = "bbb"
    with pytest.raises(ValueError, match="tokenizer"):
        adjust.generate(model, sampler=g, K=2, max_new_tokens=4)


def test_absolute_positions_start_at_nothing_follow_rope_positions_and_are_saved(tmp_path):
    """g with `positions`: a fresh one equals g without them (the projection starts at 0); the term depends on
    the position counted from the first non-pad token, as RoPE's; saved and loaded with the sampler; a config
    from before the option loads as g without them; bad values are refused."""
    import json

    model = tiny_mdlm(vocab_size=12, sharpen=3.0, mix=5.0)
    ad = as_adapter(model)
    plain, pos = AdjustSampler.from_base(model), AdjustSampler.from_base(model, positions=4)
    with torch.no_grad():
        for g in (plain, pos):
            g.norm_out.weight.fill_(1.0)
    x = torch.tensor([[1, 5, 3, 3, 7, 3], [0, 0, 1, 6, 3, 3]])
    attn = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]])
    h = ad.hidden(x, attn)
    assert torch.allclose(pos(h, x, ad, attn), plain(h, x, ad, attn), atol=1e-6)
    with torch.no_grad():
        pos.pos_proj.weight.normal_()
    assert not torch.allclose(pos(h, x, ad, attn), plain(h, x, ad, attn), atol=1e-3)
    term = pos.position_term(AdjustSampler.position_ids(x, attn))
    assert torch.equal(term[1, 2:], term[0, :4])  # row 1's first real token is at position 0, as row 0's
    with pytest.raises(ValueError, match="absolute positions"):
        pos.layer_input(h, x, ad)
    pos.save_pretrained(tmp_path / "g")
    back = AdjustSampler.from_pretrained(tmp_path / "g")
    assert back.position_frequencies == 4 and torch.equal(back.pos_proj.weight, pos.pos_proj.weight)
    assert torch.equal(back(h, x, ad, attn), pos(h, x, ad, attn))
    plain.save_pretrained(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    del cfg["positions"]  # as written before the option
    (tmp_path / "old" / "config.json").write_text(json.dumps(cfg))
    old = AdjustSampler.from_pretrained(tmp_path / "old")
    assert old.position_frequencies == 0 and old.pos_proj is None
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError, match="positions"):
            AdjustSampler.from_base(model, positions=bad)
