"""Training states: on-policy rollouts follow ADJUST's own choices; windows share base forwards."""

import itertools

import pytest
import torch

import adjust
from adjust.models.adapter import as_adapter
from adjust.train.rollouts import rollout_states, self_generated
from adjust.train.sampler import _draw, rollout_kl
from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories
from conftest import perturbed_sampler, tiny_mdlm

MASK = 3


def test_windows_are_consecutive_and_share_base_forwards(tmp_path):
    model = tiny_mdlm(vocab_size=12, sharpen=3.0, mix=20.0)
    generate_trajectories(model, [[1], [1, 9]], tmp_path, TrajectorySettings(num_sequences=12, gen_length=8),
                          progress=False)
    tr = load_trajectories(tmp_path)
    rows, ts = _draw(tr, torch.arange(len(tr)), torch.Generator().manual_seed(0), 20, windows=4)
    assert len(rows) == 20
    runs = [(r, list(g)) for r, g in itertools.groupby(zip(rows, ts), key=lambda p: p[0])]
    for r, pairs in runs:  # consecutive starts of one trajectory, inside [0, L − 1)
        starts = [t for _, t in pairs]
        assert starts == list(range(starts[0], starts[0] + len(starts))) and 0 <= starts[0] and starts[-1] < 7
    # every start t in 0..6 is equally likely, the first and last included (windows cut at the edges)
    _, many = _draw(tr, torch.arange(len(tr)), torch.Generator().manual_seed(1), 28000, windows=4)
    counts = torch.bincount(torch.tensor(many), minlength=7).double()
    assert len(counts) == 7 and float(((counts - 4000) ** 2 / 4000).sum()) < 30  # chi-square, 6 dof
    xs, attn = rollout_states(tr, rows, ts, 3, MASK, 0)
    ad = as_adapter(model)
    calls = []
    hidden = ad.hidden
    ad.hidden = lambda x, a=None: calls.append(x.shape[0]) or hidden(x, a)
    sampler = perturbed_sampler(model)
    loss, base = rollout_kl(sampler, ad, xs, attn)
    assert calls == [len(torch.unique(torch.cat([xs.reshape(-1, xs.shape[-1]), attn.repeat(4, 1)], 1), dim=0))]
    assert calls[0] <= len(runs) * 7  # ≤ (4 windows + 3) states per trajectory drawn, not 4 per start
    # the same loss as one forward per state (no sharing)
    ad.hidden = hidden
    expect, expect_base = _loss_without_sharing(sampler, ad, xs, attn)
    assert loss.item() == pytest.approx(expect, rel=1e-5) and base.item() == pytest.approx(expect_base, rel=1e-5)


@torch.no_grad()
def _loss_without_sharing(sampler, ad, xs, attn):
    a = None if bool(attn.all()) else attn
    H = [ad.hidden(xs[j], a) for j in range(xs.shape[0])]
    h, loss, base = H[0], 0.0, 0.0
    for j in range(1, xs.shape[0]):
        h = sampler(h, xs[j], ad, a)
        m = (xs[j] == MASK) & attn.bool()
        lp, lq, l0 = (torch.log_softmax(ad.logits(v[m]).float().index_fill(-1, torch.tensor([MASK]), -1e4), -1)
                      for v in (H[j], h, H[0]))
        loss += float((lp.exp() * (lp - lq)).sum() / m.sum())
        base += float((lp.exp() * (lp - l0)).sum() / m.sum())
    return loss, base


def _two_step_states(tmp_path, num_sequences: int, gen_length: int, ts: list[int]):
    """A tiny model's trajectories, R = 2 teacher-forced states of rows 0..2 at starts `ts`, its adapter
    and a perturbed sampler."""
    model = tiny_mdlm(vocab_size=12, sharpen=3.0, mix=20.0)
    generate_trajectories(model, None, tmp_path, TrajectorySettings(num_sequences=num_sequences,
                                                                    gen_length=gen_length), progress=False)
    xs, attn = rollout_states(load_trajectories(tmp_path), [0, 1, 2], ts, 2, MASK, 0)
    return xs, attn, as_adapter(model), perturbed_sampler(model)


def test_focus_moves_weight_onto_the_next_commits(tmp_path):
    xs, attn, ad, sampler = _two_step_states(tmp_path, 6, 8, [0, 2, 4])
    plain, _ = rollout_kl(sampler, ad, xs, attn)
    assert rollout_kl(sampler, ad, xs, attn, focus=0.0)[0].item() == plain.item()
    tau = 0.1
    focused = rollout_kl(sampler, ad, xs, attn, focus=1.0, focus_temperature=tau)[0].item()
    # by hand: per row, KLs weighted by ½ softmax(−H(p)/τ) + ½ softmax(−H(q)/τ) over its masked positions
    h, expect = ad.hidden(xs[0]), 0.0
    for j in (1, 2):
        h = sampler(h, xs[j], ad)
        p_all = torch.log_softmax(ad.logits(ad.hidden(xs[j])).float().index_fill(-1, torch.tensor([MASK]), -1e4), -1)
        q_all = torch.log_softmax(ad.logits(h).float().index_fill(-1, torch.tensor([MASK]), -1e4), -1)
        terms = []
        for b in range(3):
            m = xs[j, b] == MASK
            if m.any():
                lp, lq = p_all[b][m], q_all[b][m]
                kl = (lp.exp() * (lp - lq)).sum(-1)
                w = 0.5 * (torch.softmax((lp.exp() * lp).sum(-1) / tau, 0) +
                           torch.softmax((lq.exp() * lq).sum(-1) / tau, 0))
                terms.append(float((w * kl).sum().detach()))
        expect += sum(terms) / len(terms)
    assert focused == pytest.approx(expect, rel=1e-4)
    assert abs(focused - plain.item()) > 1e-3  # the weighting changes the loss


def test_per_state_weighs_every_state_alike(tmp_path):
    """per_state: each pass's loss is the mean over rows of each row's mean KL over its own masked positions
    (rows with fewer masked positions weigh more than in the per-position mean); with the same number of
    masked positions in every row the two means agree."""
    xs, attn, ad, sampler = _two_step_states(tmp_path, 6, 9, [0, 3, 6])  # rows 9, 6 and 3 positions masked at x_t
    plain, _ = rollout_kl(sampler, ad, xs, attn)
    per_state, _ = rollout_kl(sampler, ad, xs, attn, per_state=True)
    h, expect = ad.hidden(xs[0]), 0.0
    for j in (1, 2):
        h = sampler(h, xs[j], ad)
        p_all, q_all = (torch.log_softmax(ad.logits(v).float().index_fill(-1, torch.tensor([MASK]), -1e4), -1)
                        for v in (ad.hidden(xs[j]), h))
        rows = []
        for b in range(3):
            m = xs[j, b] == MASK
            if m.any():
                lp, lq = p_all[b][m], q_all[b][m]
                rows.append(float((lp.exp() * (lp - lq)).sum(-1).mean().detach()))
        expect += sum(rows) / len(rows)
    assert per_state.item() == pytest.approx(expect, rel=1e-4)
    assert abs(per_state.item() - plain.item()) > 1e-4  # unequal rows: another weighting
    same_xs, same_attn = xs[:, [1, 1, 1]], attn[[1, 1, 1]]  # one row thrice: equal masked counts
    assert rollout_kl(sampler, ad, same_xs, same_attn, per_state=True)[0].item() == pytest.approx(
        rollout_kl(sampler, ad, same_xs, same_attn)[0].item(), rel=1e-5)
    from adjust.train.sampler import SamplerTrainConfig, train_sampler

    with pytest.raises(ValueError, match="kl_weight"):
        train_sampler(tiny_mdlm(vocab_size=12), None, None, SamplerTrainConfig(kl_weight="row"), progress=False)


def test_self_generated_trajectories_are_adjust_generations(tmp_path):
    model = tiny_mdlm(vocab_size=12, sharpen=3.0, mix=20.0)
    generate_trajectories(model, [[1], [1, 9, 10]], tmp_path, TrajectorySettings(num_sequences=6, gen_length=5),
                          progress=False)
    tr = load_trajectories(tmp_path)
    sampler = perturbed_sampler(model)
    pool = self_generated(sampler, as_adapter(model), tr, [0, 1, 2, 3], (2, 4), seed=5, batch_size=2)
    assert len(pool) == 4 and pool.settings == tr.settings
    for chunk, K in ((0, 2), (2, 4)):  # chunks alternate over the Ks
        out = adjust.generate(model, [[1], [1, 9, 10]], K=K, sampler=sampler, max_new_tokens=5, seed=5 + chunk)
        for b in range(2):
            assert torch.equal(pool.input_ids[chunk + b], out.sequences[b])
            order = out.commit_pass[b][out.commit_pass[b] >= 0].argsort()
            assert torch.equal(pool.rank[chunk + b][out.commit_pass[b] >= 0][order], torch.arange(5))
    assert sampler.training  # left as it was


def test_reverse_weight_mixes_forward_and_reverse_kl(tmp_path):
    xs, attn, ad, sampler = _two_step_states(tmp_path, 4, 6, [0, 1, 2])
    with torch.no_grad():
        fwd, fwd0 = rollout_kl(sampler, ad, xs, attn)
        rev, rev0 = rollout_kl(sampler, ad, xs, attn, reverse=1.0)
        mix, mix0 = rollout_kl(sampler, ad, xs, attn, reverse=0.25)
        # by hand: Σ_j mean over masked positions of KL(q ‖ p)
        h, expect = ad.hidden(xs[0]), 0.0
        for j in (1, 2):
            h = sampler(h, xs[j], ad)
            m = xs[j] == MASK
            lp, lq = (torch.log_softmax(ad.logits(v[m]).float().index_fill(-1, torch.tensor([MASK]), -1e4), -1)
                      for v in (ad.hidden(xs[j]), h))
            expect += float((lq.exp() * (lq - lp)).sum() / m.sum())
    assert rev.item() == pytest.approx(expect, rel=1e-4) and abs(rev.item() - fwd.item()) > 1e-3
    assert mix.item() == pytest.approx(0.75 * fwd.item() + 0.25 * rev.item(), rel=1e-5)
    assert mix0.item() == pytest.approx(0.75 * fwd0.item() + 0.25 * rev0.item(), rel=1e-5)


@pytest.mark.parametrize("focus", [0.0, 0.5])
def test_training_step_without_the_baseline_has_the_same_loss_and_gradient(tmp_path, focus):
    """A training step skips the parallel baseline (baseline=False): the loss and its gradient are unchanged."""
    xs, attn, ad, sampler = _two_step_states(tmp_path, 6, 8, [0, 2, 4])
    grads = []
    for baseline in (True, False):
        sampler.zero_grad(set_to_none=True)
        loss, base = rollout_kl(sampler, ad, xs, attn, focus=focus, baseline=baseline)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in sampler.parameters()]))
        assert (base is None) == (not baseline)
    (l1, g1), (l2, g2) = grads
    assert torch.equal(l1, l2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
