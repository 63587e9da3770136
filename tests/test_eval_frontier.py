"""The frontier driver: one record per method and knob value, TPF, the envelope and the area under it."""

import json
import math

import pytest
import torch

from adjust.cli import main
from adjust.decoding import ARJudge
from adjust.eval.frontier import (FrontierConfig, area_under_frontier, envelope, frontier_rows, quality_at,
                                  run_frontier, summarize_frontier)
from adjust.sampler import AdjustSampler
from conftest import tiny_mdlm
from test_eval import _CountTestbed


class _FlatJudge(ARJudge):
    vocab_size = 8

    def next_token_logits(self, ids, attention_mask):
        return torch.zeros(*ids.shape, self.vocab_size)


def test_envelope_keeps_the_best_quality_at_least_that_parallel():
    pts = [(1.0, 0.9), (2.0, 0.2), (3.0, 0.6), (4.0, 0.1)]
    assert envelope(pts) == [(1.0, 0.9), (2.0, 0.6), (3.0, 0.6), (4.0, 0.1)]


def test_quality_and_area_are_log_linear_and_zero_past_the_reach():
    pts = [(1.0, 1.0), (2.0, 0.5), (4.0, 0.5)]
    assert quality_at(pts, 2.0) == 0.5
    assert quality_at(pts, math.sqrt(2)) == pytest.approx(0.75)
    assert quality_at(pts, 4.5) is None
    # over log2 TPF in [0, 2]: 1 -> 0.5 linearly, then 0.5 flat; past TPF 4 (up to 8): 0
    assert area_under_frontier(pts, max_tpf=4) == pytest.approx((0.75 + 0.5) / 2, abs=1e-6)
    assert area_under_frontier(pts, max_tpf=8) == pytest.approx((0.75 + 0.5 + 0.0) / 3, abs=1e-6)
    with pytest.raises(ValueError):
        area_under_frontier(pts, max_tpf=1)


def test_run_frontier_records_every_method_and_knob_with_its_parallelism():
    model = tiny_mdlm(vocab_size=8)
    cfg = FrontierConfig(grid={"K": (2, 4), "tau": (0.0, 2.0), "gamma": (0.0, 1e9), "weight": (1.0,)}, max_tokens=4,
                         temperatures=(1.0,), seeds=1, num_samples=4, batch_size=4)
    records = run_frontier(model, AdjustSampler.from_base(model), _CountTestbed(), cfg, judge=_FlatJudge(),
                           progress=False)
    by = {(r["method"], r["value"], r["seed"]): r for r in records}
    assert len(records) == 1 + 2 + 2 + 2 + 2 + 2 + 2 + 2 + 1
    for seed in range(1):
        assert by[("joint", None, seed)]["tpf"] == 1.0
        for K in (2, 4):
            assert by[("parallel", K, seed)]["tpf"] == K and by[("adjust", K, seed)]["tpf"] == K
            assert by[("edlm", K, seed)]["tpf"] == K
        for m in ("threshold", "adjust_threshold"):
            assert by[(m, 2.0, seed)]["tpf"] == 1.0 and by[(m, 2.0, seed)]["alg"] == "confidence"
        assert by[("threshold", 0.0, seed)]["tpf"] == 4  # the whole completion in one forward
        assert by[("adjust_threshold", 0.0, seed)]["tpf"] == 4  # capped by K_max = 4
        assert by[("entropy_bound", 0.0, seed)]["tpf"] == 1.0 and by[("entropy_bound", 1e9, seed)]["tpf"] == 4
        assert by[("apd", 1.0, seed)]["tpf"] >= 1.0
    rows = frontier_rows(records, "fives")
    summary = summarize_frontier(rows, "fives", max_tpf=4)
    assert {s["method"] for s in summary} == {r["method"] for r in records} - {"joint"}
    assert all(0 <= s["auc"] <= 1 for s in summary)
    json.dumps(records)


def test_frontier_command_runs_end_to_end(tmp_path, capsys):
    out, plot = tmp_path / "f.json", tmp_path / "f.png"
    methods = "joint,adjust,threshold,adjust_threshold,apd"  # every method runs in the test above
    main(["eval", "--frontier", "--base", "synthetic", "--sampler", "synthetic", "--methods", methods,
          "--temperature", "1.0", "--seeds", "1", "--n", "4", "--no-joint-kl", "--K", "2", "--tau", "0.3",
          "--apd-weight", "0.5", "--max-tokens", "4", "--json", str(out), "--plot", str(plot)])
    text = capsys.readouterr().out
    assert "area under frontier" in text and "adjust_threshold" in text and "apd" in text
    records = json.loads(out.read_text())
    assert {r["method"] for r in records} == set(methods.split(","))
    assert plot.stat().st_size > 0
    main(["report", str(out)])
    assert "area under frontier" in capsys.readouterr().out


def test_lower_is_better_metrics_keep_the_lowest_and_have_no_area():
    rows = [{"testbed": "t", "temperature": 1.0, "method": "joint", "knob": None, "value": None, "tpf": 1.0, "nll": 2.0},
            {"testbed": "t", "temperature": 1.0, "method": "m", "knob": "K", "value": 2, "tpf": 2.0, "nll": 3.0},
            {"testbed": "t", "temperature": 1.0, "method": "m", "knob": "K", "value": 4, "tpf": 4.0, "nll": 2.5}]
    (s,) = summarize_frontier(rows, "nll", max_tpf=8)
    assert s["auc"] is None and s["at_tpf_2"] == 2.5 and s["at_tpf_4"] == 2.5 and s["at_tpf_8"] is None
