"""Progress in a redirected log: a few plain lines, not one per step."""

import io

import adjust.progress as progress


def test_redirected_bar_prints_at_most_one_line_per_interval_even_with_postfix(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("tqdm.std.time", lambda: clock[0])  # tqdm reads its clock from there
    log = io.StringIO()  # not a terminal
    bar = progress.progress_bar(total=1000, file=log, desc="steps")
    for step in range(1000):
        clock[0] = step * 0.5  # 500 s in all: at most ~500 / LOG_INTERVAL lines
        bar.update(1)
        bar.set_postfix(kl=f"{1 / (step + 1):.4f}")
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 2 <= len(lines) <= 500 / progress.LOG_INTERVAL + 3, lines
    assert lines[-1].startswith("steps: 100%") and "kl=" in lines[-1]
