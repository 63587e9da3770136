"""Reference outputs of `adjust.generate` for the fixed-count methods (exact, parallel, ADJUST).

`tests/fixtures/generate_reference.json` was written by this file run on the engine *before*
the decoding-policy refactor (commit 69318be, the last one with the inline strategies):

    OMP_NUM_THREADS=1 TRITON_INTERPRET=1 PYTHONPATH=tests .venv/bin/python tests/generate_reference.py \
        --write tests/fixtures/generate_reference.json

`tests/test_decoding_refactor.py` re-runs every case on today's engine and requires the same
tokens, commit order, pass counts and history, bit for bit. Cases cover T = 0 and seeded T = 1, the
torch, cpp and triton (interpreter) backends, with and without a sampler, `block_length`,
`candidate_tokens`, `cache_context`, left-padded prompts with masks inside (infilling), every `alg`,
`alg_temp`, top-p and top-k.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import adjust
from conftest import perturbed_sampler, tiny_mdlm

FIXTURE = Path(__file__).parent / "fixtures" / "generate_reference.json"
MASK = 3
PROMPTS = {"bos": None, "padded": [[1, 5, 6, 7], [1, 8], [1, 9, MASK, 10]]}


def _case(name: str, **kw) -> dict:
    return {"name": name, **kw}


def cases() -> list[dict]:
    """Every reference case: generate() keyword arguments plus the prompt set's name."""
    out = []
    methods = {"exact": dict(K=1), "parallel": dict(K=3), "adjust": dict(K=3, sampler=True)}
    for T in (0.0, 1.0):
        for m, mk in methods.items():
            for p in PROMPTS:
                for block in (None, 3):
                    out.append(_case(f"torch-{m}-T{T}-{p}-b{block}", backend="torch", temperature=T, prompts=p,
                                     block_length=block, **mk))
    for alg in ("confidence", "margin", "low_confidence", "random"):
        for m in ("parallel", "adjust"):
            out.append(_case(f"torch-{m}-{alg}", backend="torch", temperature=1.0, prompts="padded", alg=alg,
                             **methods[m]))
    for m in ("parallel", "adjust"):
        out.append(_case(f"torch-{m}-algtemp", backend="torch", temperature=1.0, prompts="padded", alg_temp=0.5,
                         **methods[m]))
        out.append(_case(f"torch-{m}-topp-topk", backend="torch", temperature=1.0, prompts="bos", top_p=0.9, top_k=5,
                         **methods[m]))
    for T in (0.0, 1.0):
        for opt in (dict(candidate_tokens=4), dict(cache_context=True), dict(candidate_tokens=4, cache_context=True)):
            tag = "-".join(opt)
            out.append(_case(f"torch-adjust-{tag}-T{T}", backend="torch", temperature=T, prompts="padded",
                             block_length=3, **opt, **methods["adjust"]))
    for T in (0.0, 1.0):
        for m, mk in methods.items():
            for block in (None, 3):
                out.append(_case(f"cpp-{m}-T{T}-b{block}", backend="cpp", temperature=T, prompts="padded",
                                 block_length=block, **mk))
        out.append(_case(f"cpp-adjust-confidence-T{T}", backend="cpp", temperature=T, prompts="bos",
                         alg="confidence", **methods["adjust"]))
    out.append(_case("cpp-parallel-topp", backend="cpp", temperature=1.0, prompts="bos", top_p=0.9, **methods["parallel"]))
    for T in (0.0, 1.0):
        for m in ("parallel", "adjust"):
            out.append(_case(f"triton-{m}-T{T}", backend="triton", temperature=T, prompts="padded", block_length=3,
                             **methods[m]))
        for opt in (dict(candidate_tokens=4), dict(cache_context=True)):
            out.append(_case(f"triton-adjust-{'-'.join(opt)}-T{T}", backend="triton", temperature=T,
                             prompts="padded", **opt, **methods["adjust"]))
    return out


def run_case(case: dict, model, sampler) -> dict:
    """Generate one case and return everything that must not change, as JSON-ready lists."""
    kw = {k: v for k, v in case.items() if k not in ("name", "prompts", "sampler")}
    prompts = PROMPTS[case["prompts"]]
    out = adjust.generate(model, prompts, batch_size=3, max_new_tokens=6, seed=11, return_history=True,
                          sampler=sampler if case.get("sampler") else None, **kw)
    return {
        "sequences": out.sequences.tolist(),
        "attention_mask": out.attention_mask.tolist(),
        "commit_pass": out.commit_pass.tolist(),
        "base_forwards": out.base_forwards,
        "sampler_passes": out.sampler_passes,
        "tokens_generated": out.tokens_generated,
        "history": [[r.base_forward, r.pass_index, r.positions, r.tokens, r.logprobs] for r in out.history],
    }


def models():
    """The tiny base model (context-sensitive, peaky) and a sampler moved off its parallel init (without
    absolute positions: the recorded outputs predate them; the other tests cover the position term)."""
    model = tiny_mdlm(vocab_size=12, seed=1, sharpen=2.0, mix=10.0)
    return model, perturbed_sampler(model, seed=1, positions=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, required=True, help="output JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, sampler = models()
    ref = {c["name"]: {"case": c, "out": run_case(c, model, sampler)} for c in cases()}
    args.write.parent.mkdir(parents=True, exist_ok=True)
    args.write.write_text(json.dumps(ref, indent=None, separators=(",", ":")) + "\n")
    print(f"{len(ref)} cases -> {args.write}")


if __name__ == "__main__":
    main()
