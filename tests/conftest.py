import os

import pytest
import torch

# Two CPU cores in CI: keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))
# Without a GPU the Triton kernels run in Triton's CPU interpreter (read when kernels are
# defined, so it must be set before adjust_kernels is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def tiny_mdlm(vocab_size: int = 8, seed: int = 0, sharpen: float = 1.0, mix: float = 1.0, **kw):
    """A randomly initialised tiny MaskedDiffusionLM.

    `sharpen` scales the LM head (peakier marginals); `mix` scales the layers' weights so
    the marginals depend strongly on the context (random init at std 0.02 barely mixes).
    """
    from adjust import MaskedDiffusionLM, MDLMConfig

    torch.manual_seed(seed)
    cfg = dict(vocab_size=vocab_size, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16,
               intermediate_size=64, max_seq_len=64)
    cfg.update(kw)
    model = MaskedDiffusionLM(MDLMConfig(**cfg)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)
        for name, p in model.layers.named_parameters():
            if "norm" not in name:
                p.mul_(mix)
    return model


def saved_base_and_data(tmp_path, num_sequences: int, gen_length: int):
    """A tiny base saved to tmp_path/base and its K = 1 trajectories in tmp_path/d: the two folders a CLI
    `train-sampler` run reads."""
    from adjust.train.trajectories import TrajectorySettings, generate_trajectories

    model = tiny_mdlm(vocab_size=12, sharpen=3.0)
    base = model.save_pretrained(tmp_path / "base")
    generate_trajectories(model, None, tmp_path / "d", TrajectorySettings(num_sequences=num_sequences,
                                                                          gen_length=gen_length), progress=False)
    return base, tmp_path / "d"


@pytest.fixture
def tiny_model():
    return tiny_mdlm()


@pytest.fixture
def kernel_seed() -> int:
    """Seed torch with the kernel tests' printed random seed (tests/kernel_common.py)."""
    from kernel_common import SEED

    print(f"seed {SEED} (set ADJUST_TEST_SEED={SEED} to replay)")
    torch.manual_seed(SEED)
    return SEED


def perturbed_sampler(model, seed: int = 0, positions: int = 3):
    """An AdjustSampler for `model` moved away from its parallel-baseline init (so the passes matter), with
    `positions` frequencies of absolute positions (perturbed too: every path must add that term alike)."""
    from adjust.sampler import AdjustSampler

    torch.manual_seed(seed)
    s = AdjustSampler.from_base(model, positions=positions)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return s.to(dtype=model.lm_head.weight.dtype)
