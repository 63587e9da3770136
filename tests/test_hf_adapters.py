"""Hugging Face Dream and LLaDA drop-in: the adapters over tiny models of the REAL classes.

The models are built from ``../shared/peer-code/`` (tests/peer_models.py); every test here
is skipped, saying why, where that folder is absent. Parity of whole generations with the
models' own generate is in tests/test_hf_parity.py.
"""

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

import adjust
from adjust.data.tokenizer import tokenizer_fingerprint, word_tokenizer
from adjust.models.adapter import as_adapter
from adjust.models.dream import DreamAdapter, hf_token_id
from adjust.models.layers import LayerConfig, rope_cos_sin
from adjust.models.llada import LLaDAAdapter
from adjust.sampler import AdjustSampler
from peer_models import (DREAM_IDS, LLADA_HEAD_ROWS, LLADA_IDS, PEER_CODE, SHAPE, VOCAB, dream_padding_inputs,
                         tiny_dream, tiny_llada)

FAMILIES = {"dream": tiny_dream, "llada": tiny_llada}


@pytest.fixture(scope="module", params=list(FAMILIES))
def model(request):
    return FAMILIES[request.param]()


def is_dream(model) -> bool:
    return model.config.model_type == "Dream"


def ids_of(model) -> dict:
    return DREAM_IDS if is_dream(model) else LLADA_IDS


def prompts_of(model) -> list[list[int]]:
    """Ragged prompts, one with an infilling mask."""
    bos, mask = ids_of(model)["bos_token_id"], ids_of(model)["mask_token_id"]
    return [[bos, 5, 6, 7, 8], [bos, 9], [bos, 10, mask, 11]]


def trained_like(model) -> AdjustSampler:
    """A sampler that changes h (Norm_out ≠ 0), as a trained one would."""
    g = AdjustSampler.from_base(model)
    with torch.no_grad():
        g.norm_out.weight.fill_(1.0)
    return g


def own_logits(model, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The model's own forward, aligned so that [:, i] predicts token i (Dream: shifted as its generation does)."""
    if not is_dream(model):
        return model(x, attention_mask=attention_mask).logits
    if attention_mask is None:
        logits = model(x, "full").logits
    else:
        mask4d, tok_idx = dream_padding_inputs(attention_mask)
        logits = model(x, mask4d, tok_idx).logits
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def test_dispatch_ids_and_layer_config(model):
    ad = as_adapter(model)
    ids = ids_of(model)
    assert isinstance(ad, DreamAdapter if is_dream(model) else LLaDAAdapter)
    assert (ad.mask_token_id, ad.bos_token_id, ad.eos_token_id, ad.pad_token_id) == (
        ids["mask_token_id"], ids["bos_token_id"], ids["eos_token_id"], ids["pad_token_id"])
    rows = VOCAB if is_dream(model) else LLADA_HEAD_ROWS  # the LM head's rows, not config.vocab_size
    d = SHAPE["hidden"]
    assert (ad.vocab_size, ad.hidden_size, ad.info.vocab_size, ad.info.hidden_size) == (rows, d, rows, d)
    assert ad.info.tokenizer_fingerprint is None
    eps, theta = (1e-6, 1e6) if is_dream(model) else (1e-5, 5e5)  # from the real configs
    head_dim = d // SHAPE["heads"]
    assert ad.layer_config == LayerConfig(d, SHAPE["heads"], SHAPE["kv_heads"], head_dim, SHAPE["mlp"], eps, theta,
                                          qkv_bias=is_dream(model))
    assert ad.embed_tokens.weight.shape == (rows, d) and ad.lm_head_weight.shape == (rows, d)


def test_special_ids_fall_back_from_config_to_generation_config_to_family_defaults():
    model = SimpleNamespace(config=SimpleNamespace(mask_token_id=None, eos_token_id=[7, 8]),
                            generation_config=SimpleNamespace(mask_token_id=5))
    assert hf_token_id(model, "mask_token_id", 151666) == 5
    assert hf_token_id(model, "eos_token_id", 151643) == 7
    assert hf_token_id(model, "bos_token_id", 151643) == 151643
    assert hf_token_id(model, "bos_token_id", None, vocab_size=10) is None
    # Each family's defaults where the vocabulary has them: the real vocabulary sizes, at hidden 8.
    dream = tiny_dream(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=152064)
    llada = tiny_llada(d_model=8, mlp_hidden_size=8, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=126464,
                       embedding_size=126464)
    for m in (dream, llada):
        for name in ("mask_token_id", "bos_token_id", "eos_token_id", "pad_token_id", "eot_token_id"):
            for source in (m.config, m.generation_config):
                if source is not None:  # transformers < 4.45 gives LLaDA none
                    setattr(source, name, None)
    d, l = as_adapter(dream), as_adapter(llada)
    assert (d.mask_token_id, d.eos_token_id, d.pad_token_id, d.bos_token_id) == (151666, 151643, 151643, 151643)
    assert (l.mask_token_id, l.eos_token_id, l.pad_token_id, l.bos_token_id) == (126336, 126081, 126081, 126080)
    assert l.eot_token_id == 126348


@pytest.mark.parametrize("family, name", [("dream", "mask_token_id"), ("dream", "eos_token_id"),
                                          ("llada", "bos_token_id"), ("llada", "eot_token_id"),
                                          ("llada", "mask_token_id")])
def test_default_ids_outside_the_vocabulary_are_refused(family, name):
    """A tiny vocabulary lacks the family defaults (LLaDA-8B's config has no bos id): refuse, don't carry them."""
    m = FAMILIES[family]()
    for source in (m.config, m.generation_config):
        if source is not None:
            setattr(source, name, None)
    with pytest.raises(ValueError, match=rf"{name}=\d+ \(the family default.*outside the model's vocabulary"):
        as_adapter(m)


def test_config_ids_outside_the_vocabulary_are_refused():
    m = tiny_llada()
    m.config.eos_token_id = LLADA_HEAD_ROWS
    with pytest.raises(ValueError, match=r"eos_token_id=128 \(model.config.eos_token_id\) is outside"):
        as_adapter(m)


def test_tokenizer_fingerprint_when_a_tokenizer_is_given():
    tok = word_tokenizer(["a", "b"])
    expected = tokenizer_fingerprint(tok)
    assert DreamAdapter(tiny_dream(), tokenizer=tok).info.tokenizer_fingerprint == expected
    transformers = pytest.importorskip("transformers")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok)  # an HF tokenizer: its backend is hashed
    expected = tokenizer_fingerprint(fast.backend_tokenizer)
    assert LLaDAAdapter(tiny_llada(), tokenizer=fast).info.tokenizer_fingerprint == expected
    slow = SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1})  # a slow HF tokenizer: its vocabulary is hashed
    assert len(DreamAdapter(tiny_dream(), tokenizer=slow).info.tokenizer_fingerprint) == 64


@torch.no_grad()
def test_llada_tied_head_is_the_embedding():
    model = tiny_llada(weight_tying=True)
    ad = as_adapter(model)
    assert "ff_out" not in model.model.transformer
    assert ad.lm_head_weight is model.model.transformer.wte.weight and ad.lm_head_bias is None
    x = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(ad.logits(ad.hidden(x)), model(x).logits, atol=1e-4)
    out = adjust.generate(model, prompts_of(model), K=3, sampler=trained_like(model), max_new_tokens=6, seed=0)
    assert not bool((out.sequences == ad.mask_token_id)[out.attention_mask.bool()].any())


def test_llada_scaled_logits_are_refused():
    with pytest.raises(ValueError, match="scale_logits"):
        as_adapter(tiny_llada(scale_logits=True))


@torch.no_grad()
@pytest.mark.parametrize("padded", [False, True])
def test_adapter_logits_equal_the_models_own(model, padded):
    ad = as_adapter(model)
    x = torch.randint(0, VOCAB, (3, 9), generator=torch.Generator().manual_seed(1))
    x[:, 5:] = ad.mask_token_id
    mask = torch.tensor([[0, 0, 0] + [1] * 6, [1] * 9, [0] + [1] * 8]) if padded else None
    ours = ad.logits(ad.hidden(x, mask))
    theirs = own_logits(model, x, mask)
    if mask is None:
        assert torch.equal(ours, theirs)
        return
    real = mask.bool()
    if is_dream(model):  # position i reads the state at i - 1: compare where that one is real too
        real[:, 1:] &= mask[:, :-1].bool()
    assert torch.equal(ours[real], theirs[real])
    # and each padded row equals the same tokens alone (LLaDA: RoPE sees other absolute positions)
    row = ad.logits(ad.hidden(x[:1, 3:]))
    assert torch.allclose(ours[0, 3 + int(is_dream(model)):], row[0, int(is_dream(model)):], atol=1e-4)


@pytest.mark.parametrize("K, sampler", [(1, None), (3, None), (3, "untrained"), (3, "trained-like")])
def test_generate_fills_every_mask(model, K, sampler):
    g = {None: None, "untrained": AdjustSampler.from_base, "trained-like": trained_like}[sampler]
    g = g(model) if g else None
    mask, bos = ids_of(model)["mask_token_id"], ids_of(model)["bos_token_id"]
    for prompts, n in ((prompts_of(model), 7), (None, 6)):  # n: most masks in a row (6 new + the infilling one)
        batch = {} if prompts is not None else {"batch_size": 2}  # a batch_size contradicting the prompts is refused
        out = adjust.generate(model, prompts, K=K, sampler=g, max_new_tokens=6, seed=0, **batch)
        assert not bool((out.sequences == mask)[out.attention_mask.bool()].any())
        assert out.base_forwards == math.ceil(n / K)
        assert out.sampler_passes == (0 if g is None else n // K * (K - 1) + max(n % K - 1, 0))
        if prompts is None:
            assert bool((out.sequences[:, 0] == bos).all())


def test_untrained_adjust_equals_parallel_at_t0(model):
    g = AdjustSampler.from_base(model)
    kw = dict(K=3, max_new_tokens=9, temperature=0.0, block_length=3)
    par = adjust.generate(model, prompts_of(model), **kw)
    adj = adjust.generate(model, prompts_of(model), sampler=g, **kw)
    assert torch.equal(par.sequences, adj.sequences) and torch.equal(par.commit_pass >= 0, adj.commit_pass >= 0)
    assert par.base_forwards == adj.base_forwards and adj.sampler_passes > 0


@pytest.mark.parametrize("sampler", [False, True])
def test_left_padded_batch_equals_each_row_alone_at_t0(model, sampler):
    g = trained_like(model) if sampler else None
    kw = dict(K=2, sampler=g, max_new_tokens=6, temperature=0.0)
    batch = adjust.generate(model, prompts_of(model), **kw)
    for i, prompt in enumerate(prompts_of(model)):
        alone = adjust.generate(model, [prompt], **kw)
        assert torch.equal(batch.sequences[i, -(len(prompt) + 6):], alone.sequences[0])


def test_from_base_copies_the_last_layer(model):
    g = AdjustSampler.from_base(model)
    ours = g.layer.state_dict()
    if is_dream(model):
        theirs = model.model.layers[-1].state_dict()
    else:
        b = model.model.transformer.blocks[-1]
        theirs = {
            "input_layernorm.weight": b.attn_norm.weight,
            "self_attn.q_proj.weight": b.q_proj.weight,
            "self_attn.k_proj.weight": b.k_proj.weight,
            "self_attn.v_proj.weight": b.v_proj.weight,
            "self_attn.o_proj.weight": b.attn_out.weight,
            "post_attention_layernorm.weight": b.ff_norm.weight,
            "mlp.gate_proj.weight": b.ff_proj.weight,  # LLaDA: act(ff_proj(x)) * up_proj(x)
            "mlp.up_proj.weight": b.up_proj.weight,
            "mlp.down_proj.weight": b.ff_out.weight,
        }
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    assert not any("embed" in n or "wte" in n or "lm_head" in n for n in g.state_dict())


@torch.no_grad()
def test_copied_layer_computes_the_base_block(model):
    """Same function, not just same tensors: names, gate/up roles, RoPE theta and GQA all line up."""
    g = AdjustSampler.from_base(model)
    lc = g.layer_config
    x = torch.randn(2, 6, lc.hidden_size, generator=torch.Generator().manual_seed(0))
    pos = torch.arange(6).expand(2, 6)
    cos, sin = rope_cos_sin(pos, lc.head_dim, lc.rope_theta, x.dtype)
    ours = g.layer(x, cos, sin, None)
    if is_dream(model):
        rope = model.model.rotary_emb(x, pos)
        theirs = model.model.layers[-1](x, attention_mask=None, position_ids=pos, position_embeddings=rope)[0]
    else:
        theirs = model.model.transformer.blocks[-1](x)[0]
    assert torch.allclose(ours, theirs, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("family", list(FAMILIES))
def test_auto_model_from_pretrained_with_remote_code(family, tmp_path, monkeypatch):
    """The documented loading path: `AutoModel.from_pretrained(folder, trust_remote_code=True)` on a checkpoint
    folder laid out like the Hub's (config with auto_map, the remote .py files, safetensors weights)."""
    import transformers.dynamic_module_utils as dynamic
    from transformers import AutoModel

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))  # keep ~/.cache clean
    built = FAMILIES[family]()
    folder = tmp_path / f"tiny-{family}"
    built.save_pretrained(folder)
    real = json.loads((PEER_CODE / family / ("config.json" if family == "dream" else
                                             "config_LLaDA-8B-Instruct.json")).read_text())
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = real["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    for code in PEER_CODE.joinpath(family).glob("*.py"):
        if code.name != "generate.py":
            shutil.copy(code, folder / code.name)
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(loaded).__name__ == type(built).__name__ and type(loaded) is not type(built)  # the folder's code
    x = torch.randint(0, VOCAB, (2, 7), generator=torch.Generator().manual_seed(3))
    ours, theirs = as_adapter(loaded), as_adapter(built)
    assert torch.equal(ours.logits(ours.hidden(x)), theirs.logits(theirs.hidden(x)))
    kw = dict(K=2, max_new_tokens=6, temperature=0.0)
    assert torch.equal(adjust.generate(loaded, prompts_of(built), **kw).sequences,
                       adjust.generate(built, prompts_of(built), **kw).sequences)
