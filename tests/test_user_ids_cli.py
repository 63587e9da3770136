"""Token-id user data end to end through the CLI: ids shifted past the specials in, shifted back out."""

import json

import pytest

from adjust.cli import main
from adjust.train.trajectories import load_trajectories

TINY = ["--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "1", "--mlp", "64"]


@pytest.fixture
def id_model(tmp_path):
    data = tmp_path / "ids.jsonl"
    data.write_text("".join(json.dumps({"input_ids": [i % 7, (i + 1) % 7, 3, 0]}) + "\n" for i in range(40)))
    out = tmp_path / "m"
    main(["train-base", "--data", str(data), "--gen-length", "4", "--steps", "3", "--eval-every", "3", "--batch-size",
          "8", "--out", str(out), "--threads", "1", *TINY])
    return out


def test_id_data_round_trip(id_model, tmp_path, capsys):
    cfg = json.loads((id_model / "config.json").read_text())
    assert cfg["vocab_size"] == 7 + 4 and cfg["extra"]["id_offset"] == 4  # derived from the data, not 1024
    capsys.readouterr()
    main(["generate", "--model", str(id_model), "--prompt-ids", "3 0", "--prompt-ids", "6", "--K", "2", "--json",
          "--threads", "1"])
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(recs) == 2
    for r in recs:
        assert all(i is None or 0 <= i < 7 for i in r["ids"]) and len(r["ids"]) <= 4
        assert r["base_forwards"] == 2 and r["sampler_passes"] == 0 and r["tokens_per_s"] > 0
    # prompts files hold data ids too
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt_ids": [5, 0]}) + "\n")
    main(["data", "--base", str(id_model), "--prompts", str(prompts), "--n", "3", "--out", str(tmp_path / "t"),
          "--threads", "1"])
    tr = load_trajectories(tmp_path / "t")
    assert tr.input_ids[0][tr.attention_mask[0].bool()][:3].tolist() == [1, 9, 4]  # BOS, 5+4, 0+4
    with pytest.raises(SystemExit, match="--prompt-ids 'a b': expected space-separated integer ids"):
        main(["generate", "--model", str(id_model), "--prompt-ids", "a b"])
