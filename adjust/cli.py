"""The `adjust` command line: demo, train-base, generate, data, train-sampler, eval, report, train-judge, info.

Run `adjust COMMAND --help` for the options and examples of each command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from adjust.data.testbed import TESTBEDS
from adjust.train.config import CPU_PRECISIONS, KL_WEIGHTS, SamplerTrainConfig

WINDOW_USES = 4  # the default `adjust data --n`: uses of each training window in a --budget run
MIN_TRAJECTORIES = 1000

EPILOGS = {
    "demo": """examples:
  adjust demo                      # every shipped model, K=1 vs parallel K=4
  adjust demo --model tasks --K 8 --n 6""",
    "train-base": """examples:
  adjust train-base --testbed synthetic --out runs/synthetic
  adjust train-base --testbed tasks --steps 6000 --out runs/tasks
  adjust train-base --data my.jsonl --vocab-size 2048 --gen-length 64 --out runs/mine""",
    "generate": """examples:
  adjust generate --model synthetic --K 4 --n 8
  adjust generate --model tasks --prompt "reverse : alice ben carol =" --K 1 --temperature 0
  adjust generate --model runs/mine --max-new-tokens 64 --K 2 --json
  adjust generate --model synthetic --sampler synthetic --K 4 --n 8   # ADJUST
  adjust generate --model tasks --prompt "sort : carol alice ben =" --decoding threshold --value 0.9
  adjust generate --model synthetic --sampler synthetic --decoding adjust_entropy --value 1 --max-tokens 8 --n 4""",
    "data": """examples:
  adjust data --base synthetic --prompts bos --out runs/traj-synthetic      # as many as the default --budget needs
  adjust data --base tasks --prompts testbed --out runs/traj-tasks
  adjust data --base runs/mine --prompts prompts.jsonl --n 20000 --temperature 0.6 --out runs/traj-mine
  torchrun --nproc_per_node 8 -m adjust data --base runs/mine --prompts bos --budget 4000000 --out runs/traj-mine
Interrupted runs resume (with any number of processes): run the same command again.
A complete --out reruns as "already complete"; a larger --n (or --budget) extends it.""",
    "train-sampler": """examples:
  adjust train-sampler --base synthetic --data runs/traj-synthetic --out runs/sampler-synthetic
  adjust train-sampler --base runs/mine --data runs/traj-mine --budget 1600000 --out runs/sampler-mine
  torchrun --nproc_per_node 8 -m adjust train-sampler --base runs/mine --data runs/traj-mine --budget 4000000 --out runs/s
The defaults are the recipe of docs/training.md; --budget is the one knob to turn. Every
evaluation runs the readiness readout (real ADJUST generation on held-out prompts, joint KL
against exact sampling); the run keeps the best readout's weights and ends with a verdict.
Interrupted runs resume from the last checkpoint: run the same command again.
A stop signal exits 143/130 after the checkpoint; a larger --budget (or --steps) extends a complete --out.
Under torchrun each global batch is split over the ranks (one step = the 1-process step).""",
    "eval": """examples:
  adjust eval --base synthetic --sampler synthetic --testbed synthetic --json runs/eval.json --plot runs/eval.png
  adjust eval --base tasks --sampler tasks --testbed tasks --K 2,4 --temperature 1.0 --seeds 2 --n 128
  adjust eval --frontier --base synthetic --sampler synthetic --temperature 1.0 --seeds 3 --n 256 \\
      --json runs/frontier.json --plot runs/frontier.png       # every decoding method over its knob
  adjust eval --frontier --base tasks --sampler tasks --methods joint,threshold,adjust_threshold --tau 0.9,0.5""",
    "report": """examples:
  adjust report docs/results/synthetic.json
  adjust report runs/eval.json --plot runs/eval.png
  adjust report docs/results/text.json --metric judge_nll --plot runs/text_judge_nll.png""",
    "train-judge": """examples:
  adjust train-judge --out adjust/assets/judges/text    # the shipped text judge (docs/text_metrics.md)
  adjust train-judge --testbed tasks --out adjust/assets/judges/tasks --hidden 64 --layers 2 --mlp 192 \\
      --dropout 0.1 --steps 1500 --threads 1            # the shipped tasks judge (EDLM / APD)
  adjust train-judge --out runs/judge --steps 500""",
    "info": """examples:
  adjust info synthetic                 # the shipped synthetic model and its sampler
  adjust info runs/sampler-mine --json
  adjust info runs/traj-mine            # a trajectory folder: settings, shards, complete or interrupted""",
}


def _int_in(lo: int, hi: int | None, bounds: str):
    """An argparse type: an int in [lo, hi) (hi None: no upper bound), else an error quoting `bounds`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value >= hi):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return parse


_seed = _int_in(0, 2**63, "in [0, 2**63)")  # what the 64-bit generators take
_positive = _int_in(1, None, "≥ 1")  # counts: --n, --seeds


def _add_allow_base_mismatch(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--allow-base-mismatch", action="store_true",
                   help=f"accept {what} whose recorded base has other weights (the same base re-saved); "
                        "vocabulary and tokenizer must still match")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--K", type=int, default=4, help="tokens per base forward (1 = exact joint sampling)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (default 1.0)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--alg", default="entropy", help="entropy | confidence | margin | low_confidence | random")
    p.add_argument("--alg-temp", type=float, default=None)
    p.add_argument("--block-length", type=int, default=None)
    p.add_argument("--seed", type=_seed, default=0)


def _add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _add_approximation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidate-tokens", type=int, default=None,
                   help="ADJUST sampler passes use only each position's N best base ids (approximate; "
                        "docs/generation.md)")
    p.add_argument("--cache-context", action="store_true",
                   help="ADJUST sampler passes update only the step's candidate rows over cached context "
                        "keys/values (approximate; docs/generation.md)")
    p.add_argument("--base-cache", default=None, choices=["prefix", "dual"],
                   help="reuse the base model's keys/values within each --block-length block (Fast-dLLM's prefix / "
                        "dual cache; approximate, every method; docs/generation.md)")
    p.add_argument("--base-cache-refresh", default="block", choices=["block", "forward"],
                   help="rebuild the base cache at each block (default) or before every forward (exact, no speed-up)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adjust", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("demo", help="generate from the shipped models: K=1 vs naive parallel", epilog=EPILOGS["demo"],
                       formatter_class=fmt)
    p.add_argument("--model", default=None, help="a shipped model name or a checkpoint folder (default: all shipped)")
    p.add_argument("--K", type=int, default=4, help="tokens per forward for the parallel run (default 4)")
    p.add_argument("--n", type=int, default=4, help="samples printed per method (default 4)")
    p.add_argument("--score-samples", type=int, default=200, help="samples scored per method (default 200)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=_seed, default=0)

    p = sub.add_parser("train-base", help="train a small masked diffusion LM", epilog=EPILOGS["train-base"],
                       formatter_class=fmt)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--testbed", choices=TESTBEDS, help="a built-in testbed")
    src.add_argument("--data", help="your own JSONL file: {text} | {prompt, completion} | {input_ids} records")
    p.add_argument("--tokenizer", help="tokenizer.json to use with --data (default: train a BPE on the data)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help="text --data without --tokenizer: size of the BPE trained on it (default 1024); "
                        "token-id --data: the number of data ids, which sets the model's output size "
                        "(default: the largest id + 1; ids 0..3 of the model are reserved, data ids are "
                        "shifted past them, see docs/testbeds.md)")
    p.add_argument("--gen-length", type=int, default=None,
                   help="completion length (default: the testbed's; --data: the longest record's target, "
                        "32-token windows for {text} records)")
    p.add_argument("--out", required=True, help="output checkpoint folder")
    p.add_argument("--steps", type=int, default=3000, help="a larger --steps extends a complete --out")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--num-examples", type=int, default=50_000, help="training examples drawn from the testbed")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--mlp", type=int, default=384)
    p.add_argument("--seed", type=_seed, default=0)
    _add_threads_arg(p)

    p = sub.add_parser("generate", help="generate from a model", epilog=EPILOGS["generate"], formatter_class=fmt)
    p.add_argument("--model", required=True, help="a shipped model name or a checkpoint folder")
    p.add_argument("--prompt", action="append", default=None, help="prompt text (repeat for a batch)")
    p.add_argument("--n", type=_positive, default=4, help="unconditional samples when no --prompt is given")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the model's training length")
    p.add_argument("--prompt-ids", action="append", default=None,
                   help="prompt as space-separated token ids, in the ids of the training data (repeat for a batch)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON record per sample: ids (in the data's ids), text, passes, forwards, tokens/s")
    p.add_argument("--sampler", default=None, help="ADJUST sampler (shipped name or folder); default: naive parallel")
    _add_allow_base_mismatch(p, "a --sampler")
    p.add_argument("--decoding", default=None,
                   choices=["threshold", "entropy_bound", "adjust_threshold", "adjust_entropy", "edlm", "apd"],
                   help="a decoding policy instead of fixed K (docs/generation.md); the threshold ones score by "
                        "confidence unless --alg low_confidence; edlm / apd use the testbed's shipped judge")
    p.add_argument("--value", type=float, default=None, help="--decoding's knob: tau, gamma, K (edlm) or weight (apd)")
    p.add_argument("--max-tokens", type=int, default=8, help="K_max of adjust_threshold / adjust_entropy")
    _add_approximation_args(p)
    _add_sampling_args(p)
    _add_threads_arg(p)

    d = SamplerTrainConfig()
    p = sub.add_parser("data", help="K=1 trajectories of a base model for sampler training (Alg. 2)",
                       epilog=EPILOGS["data"], formatter_class=fmt)
    p.add_argument("--base", required=True, help="base model: shipped name or checkpoint folder")
    p.add_argument("--prompts", default="bos",
                   help="bos (unconditional) | testbed (the base's testbed prompts) | FILE.jsonl ({prompt} or {prompt_ids})")
    p.add_argument("--n", "--num-sequences", dest="n", type=_positive, default=None,
                   help="number of sequences (default: enough for --budget, see below; spell it --num-sequences "
                        "under torchrun, which claims --n); a larger --n extends a complete folder")
    p.add_argument("--budget", type=int, default=d.budget,
                   help=f"the train-sampler --budget these trajectories are for (default {d.budget:,}): the default "
                        f"--n gives each training window about {WINDOW_USES} uses")
    p.add_argument("--out", required=True, help="output folder (shards + manifest.json)")
    p.add_argument("--gen-length", type=int, default=None, help="default: the base's training length")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--alg", default="entropy")
    p.add_argument("--block-length", type=int, default=None)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--seed", type=_seed, default=0)
    _add_threads_arg(p)
    _add_allow_base_mismatch(p, "resuming into an --out")

    d = SamplerTrainConfig()
    p = sub.add_parser("train-sampler", help="train an ADJUST sampler on trajectories (Alg. 2)",
                       epilog=EPILOGS["train-sampler"], formatter_class=fmt)
    p.add_argument("--base", required=True, help="base model: shipped name or checkpoint folder")
    p.add_argument("--data", required=True, help="trajectory folder written by `adjust data`")
    p.add_argument("--out", required=True, help="output sampler folder")
    p.add_argument("--rollout", type=int, default=d.rollout,
                   help=f"R = K - 1 sampler passes unrolled in training (default {d.rollout})")
    p.add_argument("--budget", type=int, default=d.budget,
                   help=f"training examples in the whole run, each a state unrolled R passes (default {d.budget:,}); "
                        "sets --steps = budget / batch size")
    p.add_argument("--steps", type=int, default=None,
                   help="override the steps the budget gives; a larger --steps extends a complete --out")
    p.add_argument("--batch-size", type=int, default=None,
                   help="examples per step (default 256, less for budgets under 102,400); under torchrun the global batch")
    p.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate, warm-up then cosine decay (default {d.lr})")
    p.add_argument("--windows", type=int, default=d.windows,
                   help=f"consecutive start states drawn per trajectory, sharing base forwards (default {d.windows})")
    p.add_argument("--on-policy", type=float, default=d.on_policy,
                   help="share of each batch drawn from ADJUST's own generations with the current sampler "
                        f"(DAgger; default {d.on_policy})")
    p.add_argument("--focus", type=float, default=d.focus,
                   help=f"weight on the positions about to be committed, 0 = the paper's mean (default {d.focus})")
    p.add_argument("--reverse", type=float, default=d.reverse,
                   help="weight of the reverse KL(q || p) in the loss, 0 = the paper's forward KL(p || q); the held-out "
                        f"KL reported is the same mixture (default {d.reverse})")
    p.add_argument("--kl-weight", choices=KL_WEIGHTS, default=d.kl_weight,
                   help="how a pass's KL is averaged: 'position' = every masked position of the batch alike (the "
                        "paper's), 'state' = every state alike, each the mean over its own masked positions "
                        f"(default {d.kl_weight})")
    p.add_argument("--gate-lr-scale", type=float, default=d.gate_lr_scale,
                   help="learning-rate multiplier of the sampler's zero-initialised output gate (norm_out), "
                        f"which sets how fast a run leaves the parallel plateau (default {d.gate_lr_scale})")
    p.add_argument("--gate-lr-fade", type=float, default=d.gate_lr_fade,
                   help="share of the run over which that multiplier fades linearly to 1; 0 = it holds all run "
                        f"(default {d.gate_lr_fade})")
    p.add_argument("--sampler-inputs", choices=("auto", "all", "new"), default=d.sampler_inputs,
                   help="tokens the sampler embeds: 'new' = only those committed since the step's base forward "
                        "(others read as MASK), 'all' = every token, the paper's g; 'auto' = both train to the first "
                        "evaluation (the second without a lead there) and the one with a held-out KL 20%% below the "
                        f"other's is kept, else 'all' (default {d.sampler_inputs})")
    p.add_argument("--sampler-positions", type=int, default=d.positions,
                   help="sinusoid frequencies of the absolute positions added to the sampler's input (a block that "
                        "must mirror another needs them: RoPE alone gives relative positions); 0 = none, the "
                        f"paper's g (default {d.positions})")
    p.add_argument("--adam-beta2", type=float, default=d.adam_beta2,
                   help="AdamW's second-moment decay; torch's 0.999 let the step size lag the gradient's scale "
                        f"and left some runs on a loss spike (default {d.adam_beta2})")
    p.add_argument("--cpu-precision", choices=CPU_PRECISIONS, default=d.cpu_precision,
                   help="a CPU run's training forwards: 'fp32', 'bf16' autocast (weights, losses, held-out KL and "
                        "readout stay fp32; steps 1.7-1.8x faster on the testbeds where the CPU has native bf16), or "
                        "'auto' = bf16 where the CPU multiplies bf16 natively; CUDA runs always use bf16 autocast "
                        f"(default {d.cpu_precision})")
    p.add_argument("--gate-init", type=float, default=d.gate_init,
                   help="starting value of that gate; 0 = a fresh sampler is exactly naive parallel sampling "
                        f"(default {d.gate_init})")
    p.add_argument("--deep", type=float, default=d.deep,
                   help="share of steps that train the passes after the first m (m = 1 .. R + 1, run untrained "
                        f"before them), which K up to 2(R + 1) uses; 0 = passes 1 .. R only (default {d.deep})")
    p.add_argument("--rollout-mix", action=argparse.BooleanOptionalAction, default=d.rollout_mix,
                   help="each step unrolls K - 1 passes for a K drawn uniformly from 2, R + 1, 2(R + 1), loss the "
                        "mean KL over them (every K the readout reads is trained, each K weighted alike); off = "
                        f"R passes every step, loss summed, the paper's (default {d.rollout_mix})")
    p.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (default: 8 per run)")
    p.add_argument("--readout-prompts", type=int, default=d.readout_prompts,
                   help=f"held-out prompts generated by the readiness readout, 0 = none (default {d.readout_prompts})")
    p.add_argument("--seed", type=_seed, default=d.seed)
    _add_threads_arg(p)
    _add_allow_base_mismatch(p, "--data (or an --out to resume)")

    p = sub.add_parser("eval", help="quality of K=1 / parallel / ADJUST on a testbed (tables, JSON, plot)",
                       epilog=EPILOGS["eval"], formatter_class=fmt)
    p.add_argument("--base", required=True, help="base model: shipped name or checkpoint folder")
    p.add_argument("--sampler", default=None, help="ADJUST sampler (needed for the adjust method)")
    _add_allow_base_mismatch(p, "a --sampler")
    p.add_argument("--testbed", default=None, help=" | ".join(TESTBEDS) + " (default: the base's own testbed)")
    p.add_argument("--methods", default=None,
                   help="comma-separated (default joint,parallel, and adjust with --sampler; with --frontier every "
                        "decoding method: "
                        "joint,parallel,adjust,threshold,entropy_bound,adjust_threshold,adjust_entropy,edlm,apd)")
    p.add_argument("--K", default="1,2,4,8", help="comma-separated tokens per base forward")
    p.add_argument("--temperature", default="0.6,1.0", help="comma-separated temperatures")
    p.add_argument("--frontier", action="store_true",
                   help="sweep every method's knob; report quality vs TPF and tokens/s, and the area under the frontier")
    p.add_argument("--tau", default="0.99,0.95,0.9,0.8,0.7,0.5,0.3,0.2,0.1", help="--frontier: confidence thresholds (threshold methods)")
    p.add_argument("--gamma", default="0.1,0.25,0.5,1,2,4,8", help="--frontier: entropy budgets, nats (entropy methods)")
    p.add_argument("--apd-weight", default="0.2,0.4,0.6,0.8,0.95", help="--frontier: APD mixture weights")
    p.add_argument("--max-tokens", type=int, default=8, help="--frontier: K_max of the adaptive ADJUST methods")
    p.add_argument("--max-tpf", type=float, default=8.0, help="--frontier: TPF range of the area under the frontier")
    p.add_argument("--seeds", type=_positive, default=3)
    p.add_argument("--n", type=_positive, default=256, help="samples per (method, K, T, seed)")
    p.add_argument("--no-joint-kl", action="store_true", help="skip the per-step joint KL (saves base forwards)")
    p.add_argument("--block-length", type=int, default=None, help="semi-autoregressive blocks (every method)")
    _add_approximation_args(p)
    p.add_argument("--json", default=None, help="write the records here")
    p.add_argument("--plot", default=None, help="write the quality-vs-throughput PNG here")
    _add_threads_arg(p)

    p = sub.add_parser("report", help="tables (mean ± sd over seeds) and gap closed of saved eval JSON",
                       epilog=EPILOGS["report"], formatter_class=fmt)
    p.add_argument("json", nargs="+", help="JSON files written by adjust eval --json")
    p.add_argument("--plot", default=None, help="write the quality-vs-throughput PNG here")
    p.add_argument("--metric", default=None, help="metric to plot (default: the testbed's main metric)")
    p.add_argument("--max-tpf", type=float, default=8.0, help="frontier records: TPF range of the area under the frontier")

    p = sub.add_parser("train-judge", help="train an autoregressive judge LM (text: judge_nll; EDLM / APD verifier)",
                       epilog=EPILOGS["train-judge"], formatter_class=fmt)
    p.add_argument("--out", required=True, help="output judge folder")
    p.add_argument("--testbed", default="text", choices=["text", "tasks"], help="what it is trained on (default text)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--mlp", type=int, default=384)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--num-examples", type=int, default=20_000, help="training examples (testbeds without a corpus)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--train-length", type=int, default=64, help="tokens per training window (≥ gen_length)")
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--seed", type=_seed, default=0)
    _add_threads_arg(p)

    p = sub.add_parser("info", help="what a checkpoint or trajectory folder is, what it is for, how it was made",
                       epilog=EPILOGS["info"], formatter_class=fmt)
    p.add_argument("path", help="a checkpoint or trajectory folder, or a shipped name")
    p.add_argument("--json", action="store_true", help="print the records as JSON")
    return parser


def _gen_length(model, given: int | None, flag: str = "--max-new-tokens") -> int:
    if given is not None:
        return given
    n = model.config.extra.get("gen_length")
    if n is None:
        raise SystemExit(f"error: {flag} is required for this model (it records no gen_length)")
    return int(n)


def cmd_demo(args) -> None:
    import adjust
    from adjust.data.tokenizer import decode
    from adjust.models.mdlm import ASSETS

    names = [args.model] if args.model else sorted(d.name for d in ASSETS.iterdir() if (d / "config.json").is_file())
    if not names:
        raise SystemExit("error: no shipped models found in adjust/assets/models (see docs/training.md)")
    for name in names:
        model = adjust.MaskedDiffusionLM.from_pretrained(name)
        tok = model.load_tokenizer()
        gen = _gen_length(model, None)
        testbed, prompts = _demo_prompts(model, args.score_samples, args.seed)
        print(f"\n=== {name}: {model.num_parameters() / 1e6:.2f}M params, {gen} tokens per sample ===")
        sampler = _shipped_sampler(name)
        runs = [("exact K=1", 1, None), (f"parallel K={args.K}", args.K, None)]
        if sampler is not None:
            runs.append((f"ADJUST K={args.K}", args.K, sampler))
        ids = [[model.config.bos_token_id] + p.ids for p in prompts]
        adjust.generate(model, ids[:2], K=1, max_new_tokens=gen, seed=0)  # warm-up, not timed
        for label, K, smp in runs:
            out = adjust.generate(model, ids, K=K, sampler=smp, max_new_tokens=gen, temperature=args.temperature,
                                  seed=args.seed)
            rows = out.completions.tolist()
            rate = out.tokens_generated / max(out.seconds, 1e-9)
            print(f"-- {label}: {out.base_forwards} base forwards + {out.sampler_passes} sampler passes for "
                  f"{len(rows)} samples, {rate:,.0f} tokens/s")
            scores = [testbed.score(p, r) for p, r in zip(prompts, rows)]
            for key in ("valid", "correct"):
                if scores and key in scores[0]:
                    print(f"   {key}: {100 * sum(s[key] for s in scores) / len(scores):.1f}% of {len(rows)}")
            for p, row in list(zip(prompts, rows))[: args.n]:
                shown = decode(tok, row).replace("\n", " ⏎ ") if tok is not None else row  # one line per sample
                print("   ", f"{decode(tok, p.ids)} -> {shown}" if p.ids and tok is not None else shown)


def _shipped_sampler(name: str):
    from adjust.sampler import ASSETS, AdjustSampler

    return AdjustSampler.from_pretrained(name) if (ASSETS / name / "config.json").is_file() else None


def _demo_prompts(model, n: int, seed: int):
    """The base model's testbed and n of its evaluation prompts (BOS-only when unconditional)."""
    from adjust.data import get_testbed

    testbed = get_testbed(model.config.extra.get("testbed", "synthetic"))
    return testbed, testbed.prompts(n, seed=seed + 12345)


def cmd_train_base(args) -> None:
    from adjust.data import get_testbed
    from adjust.train.base import BaseTrainConfig, train_base

    kw = {} if args.gen_length is None else {"gen_length": args.gen_length}
    if args.data:
        from adjust.data.jsonl import JsonlDataset
        from adjust.data.tokenizer import load_tokenizer

        tok = load_tokenizer(args.tokenizer) if args.tokenizer else None
        testbed = JsonlDataset(args.data, tokenizer=tok, vocab_size=args.vocab_size, **kw)
    else:
        testbed = get_testbed(args.testbed, **kw)
    model_config = {"hidden_size": args.hidden, "num_layers": args.layers, "num_heads": args.heads,
                    "num_kv_heads": args.kv_heads, "head_dim": args.hidden // args.heads,
                    "intermediate_size": args.mlp}
    train = BaseTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                            num_examples=args.num_examples, eval_every=args.eval_every)
    t0 = time.perf_counter()
    before = _job_record(args.out)
    model = train_base(testbed, args.out, model_config, train, provenance={"command": " ".join(["adjust", *sys.argv[1:]])})
    print(_already_complete(args.out, before)
          or f"saved {model.num_parameters() / 1e6:.2f}M-param model to {args.out} in {time.perf_counter() - t0:.0f}s "
             f"(gen_length {testbed.gen_length})")


def _prompt_ids(text: str, offset: int, flag: str) -> list[int]:
    """Space-separated data ids -> model ids (data id + the model's id offset)."""
    try:
        ids = [int(t) for t in text.split()]
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected space-separated integer ids") from None
    if any(i < 0 for i in ids):
        raise ValueError(f"{flag} {text!r}: ids must be ≥ 0")
    return [i + offset for i in ids]


def cmd_generate(args) -> None:
    import adjust
    from adjust.data.jsonl import to_data_ids
    from adjust.data.tokenizer import decode, encode

    model = adjust.MaskedDiffusionLM.from_pretrained(args.model)
    tok = model.load_tokenizer()
    bos = model.config.bos_token_id
    offset = int(model.config.extra.get("id_offset", 0))
    if args.prompt and args.prompt_ids:
        raise ValueError("--prompt and --prompt-ids: give one kind of prompt")
    if args.prompt:
        if tok is None:
            raise SystemExit(f"error: {args.model} has no tokenizer.json, so --prompt text cannot be encoded "
                             "(use --prompt-ids)")
        prompts = [[bos] + encode(tok, text) for text in args.prompt]
    elif args.prompt_ids:
        prompts = [[bos] + _prompt_ids(text, offset, "--prompt-ids") for text in args.prompt_ids]
    else:
        prompts = [[bos] for _ in range(args.n)]
    sampler = None
    if args.sampler:
        from adjust.sampler import AdjustSampler

        sampler = AdjustSampler.from_pretrained(args.sampler)
    K, alg, decoding = args.K, args.alg, None
    if args.decoding:
        from adjust.decoding import judge_for_testbed
        from adjust.eval.frontier import CONFIDENCE_METHODS, NEEDS_JUDGE, NEEDS_SAMPLER, FrontierConfig, policy_for

        if args.value is None:
            raise ValueError(f"--decoding {args.decoding} needs --value (its knob)")
        if args.decoding in NEEDS_SAMPLER and sampler is None:
            raise ValueError(f"--decoding {args.decoding} needs --sampler")
        judge = judge_for_testbed(model.config.extra.get("testbed", "")) if args.decoding in NEEDS_JUDGE else None
        decoding = policy_for(args.decoding, args.value, FrontierConfig(max_tokens=args.max_tokens), judge)
        K = 1
        if args.decoding in CONFIDENCE_METHODS and alg != "low_confidence":
            alg = "confidence"
    out = adjust.generate(model, prompts, K=K, sampler=sampler, allow_base_mismatch=args.allow_base_mismatch,
                          max_new_tokens=_gen_length(model, args.max_new_tokens),
                          temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, alg=alg,
                          alg_temp=args.alg_temp, block_length=args.block_length, seed=args.seed,
                          candidate_tokens=args.candidate_tokens, cache_context=args.cache_context,
                          decoding=decoding, return_history=args.json, base_cache=args.base_cache,
                          base_cache_refresh=args.base_cache_refresh)
    rate = out.tokens_generated / max(out.seconds, 1e-9)
    if args.json:
        forwards = [len({r.base_forward for r in out.history if r.positions[b]}) for b in range(len(prompts))]
        passes = [sum(1 for r in out.history if r.positions[b] and r.pass_index > 0) for b in range(len(prompts))]
    for b, row in enumerate(out.completions.tolist()):
        text = decode(tok, row) if tok is not None else None
        if args.json:
            print(json.dumps({"ids": to_data_ids(row, offset), "text": text, "K": K,
                              "decoding": repr(decoding) if decoding else None,
                              "base_forwards": forwards[b], "sampler_passes": passes[b],
                              "batch_base_forwards": out.base_forwards, "batch_sampler_passes": out.sampler_passes,
                              "tokens_per_s": round(rate, 1)}))
        else:
            print(text if text is not None else to_data_ids(row, offset))
    if not args.json:
        print(f"[{out.base_forwards} base forwards, {out.sampler_passes} sampler passes, "
              f"TPF {out.tokens_per_forward:.2f}, {rate:,.0f} tokens/s]",
              file=sys.stderr)


def _read_prompts(spec: str, model, n: int, seed: int) -> list[list[int]] | None:
    """Prompt id lists (with BOS) for `adjust data`, or None for unconditional."""
    bos = [model.config.bos_token_id]
    if spec == "bos":
        return None
    if spec == "testbed":
        from adjust.data import get_testbed

        name = model.config.extra.get("testbed")
        if name not in TESTBEDS:
            raise ValueError(f"--prompts testbed: {model.config.name!r} was not trained on a built-in testbed")
        return [bos + p.ids for p in get_testbed(name).prompts(n, seed=seed + 99_991)]
    from adjust.data.jsonl import decode_line
    from adjust.data.tokenizer import encode

    tok = model.load_tokenizer()
    prompts = []
    with open(spec, "rb") as f:
        for lineno, line in enumerate(f, 1):
            line = decode_line(line, spec, lineno)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{spec}:{lineno}: not valid JSON ({e.msg})") from None
            if "prompt_ids" in rec:
                offset = int(model.config.extra.get("id_offset", 0))
                prompts.append(bos + _prompt_ids(" ".join(map(str, rec["prompt_ids"])), offset, f"{spec}:{lineno}:"))
            elif "prompt" in rec:
                if tok is None:
                    raise ValueError(f"{spec}:{lineno}: text prompt but the base has no tokenizer.json")
                prompts.append(bos + encode(tok, rec["prompt"]))
            else:
                raise ValueError(f"{spec}:{lineno}: expected a 'prompt' or 'prompt_ids' key")
    if not prompts:
        raise ValueError(f"{spec}: no prompts")
    return prompts


def default_num_sequences(budget: int, gen_length: int, rollout: int) -> int:
    """Trajectories for a sampler-training `budget`: each holds about gen_length − R training
    windows, each to be used about `WINDOW_USES` times (and at least `MIN_TRAJECTORIES` in all)."""
    return max(MIN_TRAJECTORIES, -(-budget // (WINDOW_USES * max(1, gen_length - rollout))))


def cmd_data(args) -> None:
    import adjust
    from adjust.train.distributed import Rank
    from adjust.train.trajectories import TrajectorySettings, generate_trajectories

    rank = Rank.from_env()
    model = adjust.MaskedDiffusionLM.from_pretrained(args.base).to(rank.device)
    gen_length = _gen_length(model, args.gen_length, "--gen-length")
    n = args.n if args.n is not None else default_num_sequences(args.budget, gen_length, SamplerTrainConfig.rollout)
    settings = TrajectorySettings(num_sequences=n, gen_length=gen_length, shard_size=args.shard_size,
                                  temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, alg=args.alg,
                                  block_length=args.block_length, seed=args.seed)
    t0 = time.perf_counter()
    before = _job_record(args.out)
    generate_trajectories(model, _read_prompts(args.prompts, model, n, args.seed), args.out, settings, rank=rank,
                          allow_base_mismatch=args.allow_base_mismatch)
    if rank.is_main:
        print(_already_complete(args.out, before)
              or f"wrote {n} trajectories to {args.out} in {time.perf_counter() - t0:.0f}s"
              + (f" on {rank.world_size} processes" if rank.distributed else ""))
    rank.close()


def _scoring_testbed(model, gen_length: int):
    """The base's built-in testbed when it scores single samples (for the readout), else None."""
    from adjust.data import get_testbed

    name = model.config.extra.get("testbed")
    return get_testbed(name, gen_length=gen_length) if name in TESTBEDS and name != "text" else None


def cmd_train_sampler(args) -> None:
    import adjust
    from adjust.train.distributed import Rank
    from adjust.train.sampler import train_sampler
    from adjust.train.trajectories import load_trajectories

    rank = Rank.from_env()
    model = adjust.MaskedDiffusionLM.from_pretrained(args.base).to(rank.device)
    traj = load_trajectories(args.data)
    cfg = SamplerTrainConfig(rollout=args.rollout, budget=args.budget, steps=args.steps, batch_size=args.batch_size,
                             lr=args.lr, windows=args.windows, on_policy=args.on_policy, focus=args.focus,
                             reverse=args.reverse, kl_weight=args.kl_weight, gate_lr_scale=args.gate_lr_scale,
                             gate_lr_fade=args.gate_lr_fade, gate_init=args.gate_init, deep=args.deep, rollout_mix=args.rollout_mix,
                             sampler_inputs=args.sampler_inputs, positions=args.sampler_positions,
                             adam_beta2=args.adam_beta2, cpu_precision=args.cpu_precision,
                             eval_every=args.eval_every,
                             readout_prompts=args.readout_prompts, seed=args.seed).resolved()
    if rank.is_main:
        print(f"training {cfg.steps} steps of batch {cfg.batch_size} (budget {cfg.budget:,} examples, rollout "
              f"{cfg.rollout}, lr {cfg.lr}, on-policy share {cfg.on_policy}) on {len(traj)} trajectories",
              file=sys.stderr)
    t0 = time.perf_counter()
    before = _job_record(args.out)
    sampler = train_sampler(model, traj, args.out, cfg, provenance={"command": " ".join(["adjust", *sys.argv[1:]])},
                            rank=rank, allow_base_mismatch=args.allow_base_mismatch,
                            testbed=_scoring_testbed(model, traj.settings["gen_length"]))
    rank.close()
    if not rank.is_main:
        return
    done = _already_complete(args.out, before)
    if done:
        print(done)
        return
    print(f"saved sampler ({sampler.num_parameters() / 1e6:.2f}M params) to {args.out} "
          f"in {time.perf_counter() - t0:.0f}s: held-out KL {sampler.extra.get('heldout_kl')} "
          f"(parallel {sampler.extra.get('parallel_kl')})")
    readiness = sampler.extra.get("readiness")
    if readiness is not None:
        print(f"readiness at step {readiness['step']}: {readiness['verdict']}: {readiness['why']}")
        if readiness["verdict"] != "ready":
            print(f"warning: sampler {args.out} is not ready: {readiness['why']}", file=sys.stderr)
            if "inputs_race" not in sampler.extra:  # a race has compared both inputs already
                _plateau_hint(Path(args.out), sampler.inputs)


def _plateau_hint(out: Path, inputs: str) -> None:
    """After a not-ready run that spent its first evaluations on the parallel plateau: name the option that
    left it sooner on such data (docs/training.md, "The tokens g embeds")."""
    from adjust.train.readiness import plateau_evaluations

    log = out / "train_log.jsonl"
    if inputs != "all" or not log.is_file():
        return
    n = plateau_evaluations([json.loads(line) for line in log.read_text().splitlines() if line.strip()])
    if n >= 2:
        print(f"hint: the held-out KL stayed at parallel's for the first {n} evaluations (g learned late); "
              "on data whose joint KL sits in few positions `--sampler-inputs new` left that plateau sooner "
              "(docs/training.md, \"The tokens g embeds\"); re-run into a new --out to compare", file=sys.stderr)


def cmd_eval(args) -> None:
    import adjust
    from adjust.data import get_testbed
    from adjust.eval import EvalConfig, evaluate

    if args.base_cache_refresh != "block":
        raise ValueError("adjust eval: --base-cache-refresh forward gives the uncached results (a check for generate)")
    model = adjust.MaskedDiffusionLM.from_pretrained(args.base)
    sampler = None
    if args.sampler:
        from adjust.sampler import AdjustSampler

        sampler = AdjustSampler.from_pretrained(args.sampler)
        sampler.check_compatible(model, args.allow_base_mismatch)  # before hours of joint/parallel runs
    name = args.testbed or model.config.extra.get("testbed")
    if name is None:
        raise ValueError("--testbed is required: the base model records no testbed")
    testbed = get_testbed(name)
    if args.frontier:
        return _frontier(args, model, sampler, testbed)
    default = "joint,parallel,adjust" if sampler is not None else "joint,parallel"
    methods = tuple(m for m in (args.methods or default).split(",") if m)
    if sampler is None and "adjust" in methods:
        raise ValueError("--methods adjust needs a --sampler (or drop adjust from --methods)")
    cfg = EvalConfig(methods=methods, Ks=_numbers("--K", args.K, int, 1), temperatures=_numbers("--temperature",
                     args.temperature, float, 0), seeds=args.seeds, num_samples=args.n, joint_kl=not args.no_joint_kl,
                     candidate_tokens=args.candidate_tokens, cache_context=args.cache_context,
                     allow_base_mismatch=args.allow_base_mismatch, block_length=args.block_length,
                     base_cache=args.base_cache)
    if testbed.name == "text":
        cfg.extra_metrics.append(_text_quality(model, testbed, args.n, cfg.top_p, cfg.alg))
    _save_and_report(evaluate(model, sampler, testbed, cfg), args)


def _save_and_report(records: list[dict], args, **report) -> None:
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    _report(records, args.plot, **report)


def _numbers(flag: str, text: str, kind: type, minimum: float | None = None) -> tuple:
    """The comma-separated numbers of a flag such as --K 1,2,4, each ≥ `minimum` if given (ValueError naming the flag)."""
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag}: expected comma-separated {kind.__name__}s, got {text!r}") from None
    if not values:
        raise ValueError(f"{flag}: no values in {text!r}")
    bad = [v for v in values if minimum is not None and not v >= minimum]  # `not >=`: NaN is bad too
    if bad:
        raise ValueError(f"{flag}: every value must be ≥ {minimum}, got {bad[0]}")
    return values


def _job_record(out: str) -> dict | None:
    """The job record of an --out folder (None if it has none or is no folder)."""
    from adjust.jobstate import read_job

    return read_job(out) if Path(out).is_dir() else None


def _already_complete(out: str, before: dict | None) -> str | None:
    """The 'already complete' line when a rerun into a complete folder found nothing to do."""
    after = _job_record(out)
    if before is None or after is None or before["status"] != "complete" or after["done"] != before["done"]:
        return None
    return f"{out}: already complete ({after['unit']} {after['done']} of {after['total']}); nothing to do"


_RECORD_KEYS = ("testbed", "method", "K", "temperature")


def _report(records: list[dict], plot: str | None, metric: str | None = None) -> None:
    """Print the mean ± sd table and the gap closed of eval records; optionally plot them."""


def _text_quality(model, testbed, n: int, top_p, alg: str):
    from adjust.eval.judge import Judge
    from adjust.eval.text_quality import TextQuality

    return TextQuality(model, testbed, Judge.from_pretrained("text"), num_reference=n, top_p=top_p, alg=alg)


def _frontier(args, model, sampler, testbed) -> None:
    from adjust.decoding import judge_for_testbed
    from adjust.eval.frontier import FRONTIER_METHODS, NEEDS_JUDGE, NEEDS_SAMPLER, FrontierConfig, run_frontier

    methods = tuple(m for m in (args.methods or ",".join(FRONTIER_METHODS)).split(",") if m)
    if sampler is None and any(m in NEEDS_SAMPLER for m in methods):
        methods = tuple(m for m in methods if m not in NEEDS_SAMPLER)
        print(f"no --sampler given: skipping {', '.join(NEEDS_SAMPLER)}", file=sys.stderr)
    judge = None
    if any(m in NEEDS_JUDGE for m in methods):
        try:
            judge = judge_for_testbed(testbed.name)
        except ValueError as e:
            methods = tuple(m for m in methods if m not in NEEDS_JUDGE)
            print(f"{e}: skipping {', '.join(NEEDS_JUDGE)}", file=sys.stderr)
    grid = {"K": _numbers("--K", args.K, int, 1), "tau": _numbers("--tau", args.tau, float),
            "gamma": _numbers("--gamma", args.gamma, float), "weight": _numbers("--apd-weight", args.apd_weight, float)}
    cfg = FrontierConfig(methods=methods, grid=grid, max_tokens=args.max_tokens,
                         temperatures=_numbers("--temperature", args.temperature, float, 0), seeds=args.seeds,
                         num_samples=args.n, joint_kl=not args.no_joint_kl, allow_base_mismatch=args.allow_base_mismatch,
                         block_length=args.block_length, base_cache=args.base_cache)
    if testbed.name == "text":
        cfg.extra_metrics.append(_text_quality(model, testbed, args.n, cfg.top_p, cfg.alg))
    _save_and_report(run_frontier(model, sampler, testbed, cfg, judge=judge), args, max_tpf=args.max_tpf)


def _report(records: list[dict], plot: str | None, metric: str | None = None, max_tpf: float = 8.0) -> None:
    """Print the mean ± sd table and the gap closed of eval records (or, for frontier records, every
    frontier point and each method's area under it); optionally plot them."""
    from adjust.eval import format_table, gap_closed, summarize
    from adjust.eval.run import MAIN_METRIC

    names = sorted({r["testbed"] for r in records})
    if metric is None:
        metric = MAIN_METRIC.get(names[0], (None, True))[0] if len(names) == 1 else None
    elif not any(metric in r for r in records):
        raise ValueError(f"--metric {metric}: no record has it")
    if any("knob" in r for r in records):
        from adjust.eval.frontier import format_frontier, frontier_rows, summarize_frontier

        if metric is None:
            raise ValueError("--metric is required for frontier records of several testbeds")
        rows = frontier_rows(records, metric)
        print(format_frontier(rows, summarize_frontier(rows, metric, max_tpf), metric, max_tpf))
        if plot:
            from adjust.eval.plot import plot_frontier

            plot_frontier(rows, metric, plot, title=names[0] if len(names) == 1 else "")
        return
    shown = (metric, "valid", "nll_smoothed", "correct", "mauve", "mauve_ceiling", "judge_nll")
    metrics = [m for m in dict.fromkeys(shown) if m and any(m in r for r in records)]
    rows = summarize(records, metrics)
    print(format_table(rows, metrics))
    for m in dict.fromkeys(m for m in (metric, "judge_nll", "joint_kl") if m and any(m in r for r in records)):
        for (tb, K, T, method), g in sorted(gap_closed(rows, m).items()):
            print(f"{tb} T={T} K={K}: {method} closes {100 * g:.1f}% of the parallel→K=1 gap in {m}")
    if plot and metric:
        from adjust.eval.plot import plot_quality_vs_throughput

        plot_quality_vs_throughput(rows, metric, plot, title=names[0])


def cmd_report(args) -> None:
    records = []
    for path in args.json:
        with open(path, encoding="utf-8") as f:
            try:
                got = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path}: not a JSON file ({e})") from None
        if not isinstance(got, list) or not all(isinstance(r, dict) and all(k in r for k in _RECORD_KEYS) for r in got):
            raise ValueError(f"{path}: not adjust eval records (expected a JSON list of objects with "
                             f"{', '.join(_RECORD_KEYS)}, as written by adjust eval --json)")
        records += got
    if not records:
        raise ValueError(f"{', '.join(args.json)}: no records")
    _report(records, args.plot, args.metric, args.max_tpf)


def cmd_train_judge(args) -> None:
    from adjust.data import get_testbed
    from adjust.eval.judge import JudgeTrainConfig, train_judge

    cfg = JudgeTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every,
                           seed=args.seed)
    t0 = time.perf_counter()
    arch = dict(hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads, intermediate_size=args.mlp,
                dropout=args.dropout)
    judge = train_judge(get_testbed(args.testbed), args.out, judge_config=arch, train=cfg,
                        train_length=args.train_length, num_examples=args.num_examples,
                        provenance={"command": " ".join(["adjust", *sys.argv[1:]])})
    print(f"saved {judge.num_parameters() / 1e6:.2f}M-param judge to {args.out} in {time.perf_counter() - t0:.0f}s: "
          f"held-out NLL {judge.config.extra['heldout_nll']:.4f} nats/token")


def cmd_info(args) -> None:
    from adjust.info import describe, format_info

    records = describe(args.path)
    if args.json:
        print(json.dumps(records if len(records) > 1 else records[0], indent=1))
    else:
        print("\n\n".join(format_info(r) for r in records))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise SystemExit(f"error: --threads must be ≥ 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    handler = {"demo": cmd_demo, "train-base": cmd_train_base, "generate": cmd_generate, "data": cmd_data,
               "train-sampler": cmd_train_sampler, "eval": cmd_eval, "train-judge": cmd_train_judge,
               "info": cmd_info, "report": cmd_report}[args.command]
    from adjust.jobstate import JobInterrupted, release_locks

    try:
        handler(args)
    except JobInterrupted as e:  # checkpointed; a scheduler must not take it for a finished job
        print(e, file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except (ValueError, TypeError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    except OSError as e:  # disk full, read-only folder, a folder in use: one line naming the path
        if e.filename is None and e.strerror and getattr(args, "out", None):
            raise SystemExit(f"error: {e.strerror} (writing under {args.out})") from None
        raise SystemExit(f"error: {e.filename + ': ' + e.strerror if e.filename and e.strerror else e}") from None
    finally:  # a failed job's folder must not stay locked by this process (in-process callers, tests)
        release_locks()


if __name__ == "__main__":
    main()
