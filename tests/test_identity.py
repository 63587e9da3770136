"""Content fingerprints: what each one covers, that loading verifies them, and that mismatched bases are refused."""

import json
import shutil

import pytest
import torch

import adjust
from adjust.checkpoint import ASSETS
from adjust.cli import main
from adjust.data.tokenizer import save_tokenizer, tokenizer_fingerprint, word_tokenizer
from adjust.eval.judge import Judge, JudgeConfig
from adjust.fileio import file_sha256
from adjust.identity import check_base, hf_weights_fingerprint, stamp_shipped, trajectories_fingerprint
from adjust.models.adapter import as_adapter
from adjust.sampler import AdjustSampler
from adjust.train.trajectories import TrajectorySettings, generate_trajectories, load_trajectories
from conftest import tiny_mdlm
from peer_models import tiny_dream, tiny_llada


def test_saved_model_records_and_loads_its_weight_fingerprint(tmp_path):
    model = tiny_mdlm(vocab_size=12)
    assert model.fingerprint is None  # never saved: unknown
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["weights_sha256"] == file_sha256(tmp_path / "m" / "model.safetensors") == model.fingerprint
    loaded = adjust.MaskedDiffusionLM.from_pretrained(tmp_path / "m")
    assert loaded.fingerprint == model.fingerprint == as_adapter(loaded).info.fingerprint
    # re-saving the same tensors gives the same bytes; other weights another fingerprint
    loaded.save_pretrained(tmp_path / "again")
    assert loaded.fingerprint == model.fingerprint
    other = tiny_mdlm(vocab_size=12, seed=1)
    other.save_pretrained(tmp_path / "other")
    assert other.fingerprint != model.fingerprint


@pytest.mark.parametrize("kind", ["model", "sampler", "judge"])
def test_flipped_byte_in_the_weights_is_refused(tmp_path, kind):
    model = tiny_mdlm(vocab_size=12)
    if kind == "model":
        model.save_pretrained(tmp_path / "c")
        load = adjust.MaskedDiffusionLM.from_pretrained
    elif kind == "sampler":
        AdjustSampler.from_base(model).save_pretrained(tmp_path / "c")
        load = AdjustSampler.from_pretrained
    else:
        Judge(JudgeConfig(vocab_size=12, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
              ).save_pretrained(tmp_path / "c")
        load = Judge.from_pretrained
    load(tmp_path / "c")  # the intact file loads
    w = tmp_path / "c" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor: still a readable safetensors file
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.safetensors: checksum mismatch"):
        load(tmp_path / "c")


def test_swapped_tokenizer_is_refused(tmp_path):
    tok_a, tok_b = word_tokenizer(["a", "b"]), word_tokenizer(["b", "a"])
    tiny_mdlm(vocab_size=6).save_pretrained(tmp_path / "m", tokenizer=tok_a)
    model = adjust.MaskedDiffusionLM.from_pretrained(tmp_path / "m")
    assert tokenizer_fingerprint(model.load_tokenizer()) == model.config.tokenizer_fingerprint
    save_tokenizer(tok_b, tmp_path / "m" / "tokenizer.json")  # copied in from another model
    with pytest.raises(ValueError, match=r"tokenizer\.json: not this model's tokenizer"):
        model.load_tokenizer()


def test_sampler_for_another_base_of_the_same_shape_is_refused(tmp_path):
    a, b = tiny_mdlm(vocab_size=12, seed=0), tiny_mdlm(vocab_size=12, seed=1)
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    AdjustSampler.from_base(a).save_pretrained(tmp_path / "s")
    sampler = AdjustSampler.from_pretrained(tmp_path / "s")
    assert sampler.base.fingerprint == a.fingerprint
    with pytest.raises(ValueError, match=rf"sampler: made for base 'mdlm' with weights {a.fingerprint[:12]}.*"
                                         rf"{b.fingerprint[:12]}.*--allow-base-mismatch"):
        adjust.generate(b, sampler=sampler, K=2, max_new_tokens=4)
    out = adjust.generate(b, sampler=sampler, K=2, max_new_tokens=4, allow_base_mismatch=True)
    assert out.tokens_generated == 4
    with pytest.raises(ValueError, match="vocab_size 12 vs base 14"):  # the override never covers the shape
        adjust.generate(tiny_mdlm(vocab_size=14), sampler=sampler, K=2, max_new_tokens=4, allow_base_mismatch=True)


def _cli_error(capsys, *args) -> str:
    """The one-line error `adjust ARGS` exits with (it must exit non-zero)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    capsys.readouterr()
    assert isinstance(e.value.code, str) and "\n" not in e.value.code  # SystemExit(str): exit status 1
    return e.value.code


def test_cli_sampler_for_another_base_of_the_same_shape_is_refused(tmp_path, capsys):
    """`adjust generate --sampler` / `adjust eval --sampler` with a same-shape base of other weights."""
    a, b = tiny_mdlm(vocab_size=12, seed=0), tiny_mdlm(vocab_size=12, seed=1)
    b.config.extra["gen_length"] = 4
    pa, pb = a.save_pretrained(tmp_path / "a"), b.save_pretrained(tmp_path / "b")
    AdjustSampler.from_base(a).save_pretrained(tmp_path / "s")
    want = (f"error: sampler: made for base 'mdlm' with weights {a.fingerprint[:12]}, but the base given is 'mdlm' "
            f"with weights {b.fingerprint[:12]}")
    for args in (["generate", "--model", pb, "--K", 2], ["eval", "--base", pb, "--testbed", "tasks"]):
        msg = _cli_error(capsys, *args, "--sampler", tmp_path / "s", "--threads", 1)
        assert msg.startswith(want) and "--allow-base-mismatch" in msg, msg
    main([str(x) for x in ("generate", "--model", pb, "--K", 2, "--sampler", tmp_path / "s", "--allow-base-mismatch",
                           "--threads", 1)])
    assert capsys.readouterr().out.strip()  # the override generates
    main([str(x) for x in ("generate", "--model", pa, "--K", 2, "--max-new-tokens", 4, "--sampler", tmp_path / "s",
                           "--threads", 1)])  # its own base needs no override
    assert capsys.readouterr().out.strip()


def test_check_base_skips_what_either_side_does_not_record():
    rec = {"name": "a", "vocab_size": 5, "hidden_size": 8, "tokenizer_fingerprint": None}  # a sampler saved before
    check_base(rec, {**rec, "name": "b", "fingerprint": "f" * 64}, "sampler")
    with pytest.raises(ValueError, match="hidden_size 8 vs base 9"):
        check_base(rec, {**rec, "hidden_size": 9}, "sampler")


def test_trajectories_record_their_base_and_their_own_fingerprint(tmp_path):
    model = tiny_mdlm(vocab_size=12)
    model.save_pretrained(tmp_path / "m")
    generate_trajectories(model, None, tmp_path / "t", TrajectorySettings(5, 3, shard_size=2), progress=False)
    man = json.loads((tmp_path / "t" / "manifest.json").read_text())
    tr = load_trajectories(tmp_path / "t")
    assert man["base"]["fingerprint"] == model.fingerprint == tr.base["fingerprint"]
    assert man["fingerprint"] == tr.fingerprint == trajectories_fingerprint(man["shards"])
    assert trajectories_fingerprint(man["shards"][::-1]) == tr.fingerprint  # listed in another order: same set
    man["fingerprint"] = "0" * 64
    (tmp_path / "t" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="recorded fingerprint"):
        load_trajectories(tmp_path / "t")


@pytest.mark.parametrize("make", [tiny_dream, tiny_llada])
def test_hf_fingerprint_tells_checkpoints_apart_but_not_load_dtypes(make):
    model = make(seed=0)
    fp = hf_weights_fingerprint(model)
    assert as_adapter(model).info.fingerprint == fp
    assert hf_weights_fingerprint(make(seed=0)) == fp  # the same weights loaded again
    assert hf_weights_fingerprint(make(seed=1)) != fp
    half = make(seed=0)
    with torch.no_grad():  # a checkpoint stored in bf16 loads identically in bf16 and fp32
        for p in half.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    assert hf_weights_fingerprint(half) == hf_weights_fingerprint(half.to(torch.bfloat16))
    tuned = make(seed=0)
    with torch.no_grad():  # a fine-tune moves every sampled tensor
        next(iter(tuned.parameters())).add_(1e-3)
    assert hf_weights_fingerprint(tuned) != fp


def test_shipped_checkpoints_carry_fingerprints_that_match_their_files():
    for kind in ("models", "samplers", "judges"):
        for folder in sorted((ASSETS / kind).glob("*/")):
            cfg = json.loads((folder / "config.json").read_text())
            assert cfg["weights_sha256"] == file_sha256(folder / "model.safetensors"), folder
    for folder in sorted((ASSETS / "samplers").glob("*/")):
        sampler = AdjustSampler.from_pretrained(folder.name)
        base = adjust.MaskedDiffusionLM.from_pretrained(folder.name)
        assert sampler.base.fingerprint == base.fingerprint
        sampler.check_compatible(base)


def test_stamping_the_shipped_assets_is_reproducible(tmp_path):
    shutil.copytree(ASSETS, tmp_path / "assets")
    assert stamp_shipped(tmp_path / "assets") == []  # already stamped: nothing changes
    cfg_file = tmp_path / "assets" / "samplers" / "tasks" / "config.json"
    stamped = cfg_file.read_text()
    cfg = json.loads(stamped)  # as it was before fingerprints existed
    del cfg["weights_sha256"], cfg["base"]["fingerprint"]
    cfg_file.write_text(json.dumps(cfg, indent=2) + "\n")
    assert stamp_shipped(tmp_path / "assets") == [cfg_file]
    assert cfg_file.read_text() == stamped
