"""Every shipped base model has a sampler made for it by the package's own commands, and it beats parallel."""

import json

import pytest

import adjust
from adjust.models.mdlm import ASSETS as MODELS
from adjust.sampler import ASSETS as SAMPLERS

SHIPPED = sorted(d.name for d in MODELS.iterdir() if (d / "config.json").is_file())


def test_the_three_testbeds_are_shipped():
    assert SHIPPED == ["synthetic", "tasks", "text"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_and_sampler_belong_together(name):
    model = adjust.MaskedDiffusionLM.from_pretrained(name)
    sampler = adjust.AdjustSampler.from_pretrained(name)
    sampler.check_compatible(model)
    assert model.config.extra["testbed"] == name and model.load_tokenizer() is not None
    assert model.config.extra["command"].startswith(f"adjust train-base --testbed {name} ")
    assert sampler.extra["command"].startswith("adjust train-sampler ")
    # a shipped sampler must be better than the parallel baseline it replaces, on held-out trajectories
    assert sampler.extra["heldout_kl"] < sampler.extra["parallel_kl"]
    log = [json.loads(line) for line in (SAMPLERS / name / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "heldout_kl" in r]
    # the weights are those of one logged evaluation (the best readout's, not always the last)
    kept = [r for r in evals if r["step"] == sampler.extra.get("steps", evals[-1]["step"])]
    assert kept and kept[0]["heldout_kl"] == sampler.extra["heldout_kl"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_models_generate_with_every_method(name):
    model = adjust.MaskedDiffusionLM.from_pretrained(name)
    sampler = adjust.AdjustSampler.from_pretrained(name)
    n = model.config.extra["gen_length"]
    for K, smp in ((1, None), (4, None), (4, sampler)):
        out = adjust.generate(model, K=K, sampler=smp, max_new_tokens=n, batch_size=2, seed=0)
        assert out.base_forwards == -(-n // K) and not bool((out.completions == model.config.mask_token_id).any())


@pytest.mark.parametrize("name", ["text", "tasks"])
def test_shipped_judges_were_made_by_the_package_for_their_testbed(name):
    from adjust.data import get_testbed
    from adjust.eval.judge import ASSETS as JUDGES
    from adjust.eval.judge import Judge

    judge = Judge.from_pretrained(name)
    judge.check_tokenizer(get_testbed(name).tokenizer)
    extra = judge.config.extra
    assert extra["testbed"] == name and extra["command"].startswith("adjust train-judge ")
    log = [json.loads(line) for line in (JUDGES / name / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["heldout_nll"] == extra["heldout_nll"]
    if name == "tasks":  # the judges added for the EDLM / APD baselines ship small
        assert (JUDGES / name / "model.safetensors").stat().st_size < 1_000_000
