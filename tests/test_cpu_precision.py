"""`cpu_precision`: a CPU sampler run's training forwards under bf16 autocast, and the fp32 attention
that keeps its backward fast (torch's CPU flash kernel is ~7x slower in bf16 at these head sizes)."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from adjust.models.layers import Attention, LayerConfig
from adjust.train import config as config_module
from adjust.train.config import CPU_PRECISIONS, SamplerTrainConfig, cpu_bf16_default
from adjust.train.sampler import train_sampler
from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories
from conftest import tiny_mdlm


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_attention_on_cpu_is_fp32_attention_of_the_same_inputs(dtype):
    """bf16 / fp16 q, k, v: the output (in their dtype) and the gradients are those of fp32 attention on the
    same values, rounded once; a partly full key mask, GQA, batch > 1, odd lengths."""
    torch.manual_seed(0)
    att = Attention(LayerConfig(hidden_size=24, num_heads=6, num_kv_heads=2, head_dim=4, intermediate_size=40))
    B, L = 3, 11
    q = torch.randn(B, 6, L, 4).to(dtype).requires_grad_()
    k, v = (torch.randn(B, 2, L, 4).to(dtype).requires_grad_() for _ in range(2))
    key_mask = torch.ones(B, L, dtype=torch.bool)
    key_mask[0, :4] = False
    key_mask[2, :1] = False
    att.o_proj = torch.nn.Identity()  # the attention itself, not the projection after it
    out = att.attend(q, k, v, key_mask)
    assert out.dtype == dtype
    q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(q32, k32.repeat_interleave(3, 1), v32.repeat_interleave(3, 1),
                                         attn_mask=key_mask[:, None, None, :]).transpose(1, 2).reshape(B, L, 24)
    assert torch.equal(out, ref.to(dtype))
    w = torch.randn(B, L, 24)
    (out.float() * w).sum().backward()
    (ref * w).sum().backward()
    for low, full in ((q, q32), (k, k32), (v, v32)):
        assert low.grad.dtype == dtype
        assert torch.allclose(low.grad.float(), full.grad, atol=2e-2, rtol=2e-2)


def test_fp32_is_the_default_and_auto_resolves_to_what_this_cpu_multiplies_natively(monkeypatch):
    assert SamplerTrainConfig().resolved().cpu_precision == "fp32"  # the default: opt in to bf16
    assert SamplerTrainConfig(cpu_precision="auto").resolved().cpu_precision == cpu_bf16_default() in CPU_PRECISIONS[1:]
    assert SamplerTrainConfig(cpu_precision="fp32").resolved().cpu_precision == "fp32"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert config_module.cpu_bf16_default() == "fp32"
    assert SamplerTrainConfig(cpu_precision="auto").resolved().cpu_precision == "fp32"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert SamplerTrainConfig(cpu_precision="bf16").resolved().cpu_precision == "bf16"
    assert SamplerTrainConfig(cpu_precision="auto").resolved().cpu_precision == "bf16"


def test_a_bf16_run_trains_the_same_sampler_to_bf16_accuracy_and_bad_values_are_refused(tmp_path):
    """bf16 autocast engages (the weights differ from the fp32 run's) and trains as well: the held-out KL (an fp32
    evaluation) within 2% of the fp32 run's after 6 steps. (Not weight by weight: Adam's sign-like steps turn
    bf16's rounding of near-zero gradients into steps of the full size.)"""
    model = tiny_mdlm(vocab_size=12, sharpen=3.0, mix=30.0)  # marginals that depend on the context
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=40, gen_length=7),
                          progress=False)
    tr = load_trajectories(tmp_path / "d")
    cfg = SamplerTrainConfig(steps=20, batch_size=8, eval_every=10, heldout_examples=16, readout_prompts=0,
                             sampler_inputs="all", cpu_precision="fp32")
    a = train_sampler(model, tr, tmp_path / "a", cfg, progress=False)
    b = train_sampler(model, tr, tmp_path / "b", replace(cfg, cpu_precision="bf16"), progress=False)
    assert any(not torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert b.extra["heldout_kl"] == pytest.approx(a.extra["heldout_kl"], rel=0.02)
    with pytest.raises(ValueError, match="cpu_precision must be one of"):
        train_sampler(model, tr, tmp_path / "c", replace(cfg, cpu_precision="fp16"), progress=False)
