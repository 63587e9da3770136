"""Sampler inputs "new" (adjust.sampler): g embeds only the tokens committed since the step's base
forward, every other position as MASK — the rule, its persistence, and every generation path
(eager, fused reference and Triton loops, context cache, base cache) against the reference engine."""

import json

import pytest
import torch

import adjust
from adjust.info import describe
from adjust.models.adapter import as_adapter
from adjust.sampler import AdjustSampler
from conftest import saved_base_and_data, tiny_mdlm

V = 41


def _samplers(model) -> dict[str, AdjustSampler]:
    """The same nonzero-gate sampler weights with inputs "all" and "new"."""
    torch.manual_seed(3)
    g = AdjustSampler.from_base(model)
    with torch.no_grad():
        g.norm_out.weight.uniform_(0.5, 1.5)
        g.down_proj.weight.add_(0.2 * torch.randn_like(g.down_proj.weight))
    out = {"all": g.eval()}
    out["new"] = AdjustSampler.from_base(model, inputs="new").eval()
    out["new"].load_state_dict(g.state_dict())
    return out


def test_input_tokens_keep_only_what_was_masked_at_the_base_forward():
    model = tiny_mdlm(vocab_size=V)
    m = as_adapter(model).mask_token_id
    x_base = torch.tensor([[1, 5, m, 7, m, m], [0, 1, m, m, 9, m]])
    x = torch.tensor([[1, 5, 9, 7, m, 11], [0, 1, 6, m, 9, m]])
    g = _samplers(model)
    assert torch.equal(g["all"].input_tokens(x, x_base, m), x)
    assert g["new"].input_tokens(x, x_base, m).tolist() == [[m, m, 9, m, m, 11], [m, m, 6, m, m, m]]


def test_new_inputs_see_visible_tokens_only_through_h():
    """Changing a token the base saw (h fixed) leaves "new" g unchanged and moves "all" g."""
    model = tiny_mdlm(vocab_size=V, sharpen=10.0, mix=10.0)
    ad = as_adapter(model)
    m = ad.mask_token_id
    x_base = torch.tensor([[1, 5, m, 7, m, m, 8], [1, 12, 13, m, m, 14, m]])
    x = x_base.clone()
    x[0, 2], x[1, 4] = 20, 21  # committed since the base forward
    h = ad.hidden(x_base)
    other_base, other = x_base.clone(), x.clone()
    other_base[:, 1] = other[:, 1] = 30  # a visible token changed in both states
    g = _samplers(model)
    for name, moves in (("new", False), ("all", True)):
        s = g[name]
        a = s(h, s.input_tokens(x, x_base, m), ad)
        b = s(h, s.input_tokens(other, other_base, m), ad)
        assert torch.equal(a, b) is not moves, name


def test_inputs_persist_and_older_configs_read_as_all(tmp_path):
    model = tiny_mdlm(vocab_size=V)
    g = _samplers(model)["new"]
    g.save_pretrained(tmp_path / "new")
    assert AdjustSampler.from_pretrained(tmp_path / "new").inputs == "new"
    assert describe(tmp_path / "new")[0]["inputs"] == "new"  # adjust info shows it
    cfg_path = tmp_path / "new" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["inputs"]  # a sampler saved before the option
    cfg_path.write_text(json.dumps(cfg))
    assert AdjustSampler.from_pretrained(tmp_path / "new").inputs == "all"
    cfg["inputs"] = "some"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="inputs must be one of"):
        AdjustSampler.from_pretrained(tmp_path / "new")


CASES = [dict(K=4), dict(K=3, block_length=4), dict(K=4, cache_context=True),
         dict(K=3, block_length=4, base_cache="dual"), dict(K=4, block_length=6, base_cache="prefix")]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_triton_loop_equals_engine_with_new_inputs(case):
    model = tiny_mdlm(vocab_size=V, sharpen=10.0, mix=10.0)
    g = _samplers(model)["new"]
    prompts = [[1, 7, 8], [1, 9], [1, 5, 10, 6, 4]]  # left padding
    kw = dict(sampler=g, max_new_tokens=12, temperature=0.0, **case)
    ref = adjust.generate(model, prompts, **kw)
    fast = adjust.generate(model, prompts, backend="triton", **kw)
    assert torch.equal(ref.sequences, fast.sequences)
    assert ref.base_forwards == fast.base_forwards


def test_new_inputs_change_what_is_generated():
    """The rule reaches generation: the same weights with "all" and "new" commit different tokens."""
    model = tiny_mdlm(vocab_size=V, sharpen=10.0, mix=10.0)
    g = _samplers(model)
    prompts = [[1, 7, 8], [1, 9], [1, 5, 10, 6, 4]]
    outs = {n: adjust.generate(model, prompts, K=4, sampler=s, max_new_tokens=12, temperature=0.0).sequences
            for n, s in g.items()}
    assert not torch.equal(outs["all"], outs["new"])


def test_training_with_new_inputs_saves_a_new_inputs_sampler(tmp_path):
    from adjust.train.config import SamplerTrainConfig
    from adjust.train.sampler import train_sampler
    from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories

    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=12, gen_length=5),
                          progress=False)
    cfg = SamplerTrainConfig(steps=2, batch_size=4, eval_every=1, heldout_examples=4, readout_prompts=0,
                             sampler_inputs="new")
    g = train_sampler(model, load_trajectories(tmp_path / "d"), tmp_path / "s", cfg, progress=False)
    assert g.inputs == "new" == AdjustSampler.from_pretrained(tmp_path / "s").inputs


@pytest.mark.parametrize("inputs,hinted", [("all", True), ("new", False)])
def test_a_run_left_on_the_plateau_names_the_option(tmp_path, capsys, inputs, hinted):
    from adjust.cli import main

    base, data = saved_base_and_data(tmp_path, num_sequences=24, gen_length=5)
    main(["train-sampler", "--base", str(base), "--data", str(data), "--out", str(tmp_path / "s"),
          "--steps", "4", "--batch-size", "4", "--eval-every", "2", "--lr", "0", "--readout-prompts", "4",
          "--threads", "1", "--sampler-inputs", inputs])  # lr 0: g stays the parallel baseline
    err = capsys.readouterr().err
    assert "is not ready" in err
    assert ("--sampler-inputs new" in err) is hinted
