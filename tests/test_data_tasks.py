"""ParallelBench-style list tasks: prompts, answer sampling and exact-match scoring."""

import itertools
from collections import Counter

import pytest

from adjust.data import EOS_ID, MASK_ID, PAD_ID, TASKS, ListProblem, ListTasks, decode, encode, testbed


@pytest.fixture(scope="module")
def bed() -> ListTasks:
    return ListTasks()


def problem(task: str, items=("carol", "alice", "bob"), word="dave", index=2) -> ListProblem:
    word = word if task in {"insert_index", "insert_random", "replace_index", "replace_random"} else None
    index = index if task.endswith("_index") else None
    return ListProblem(task, tuple(items), word, index)


def ids_of(bed: ListTasks, words, eos=True) -> list[int]:
    ids = encode(bed.tokenizer, " ".join(words))
    return ids + [EOS_ID] * (bed.gen_length - len(ids)) if eos else ids


def as_prompt(bed: ListTasks, p: ListProblem) -> testbed.Prompt:
    meta = {"task": p.task, "items": list(p.items), "word": p.word, "index": p.index}
    return testbed.Prompt(ids=encode(bed.tokenizer, p.prompt_text()), meta=meta)


def score(bed: ListTasks, p: ListProblem, completion: list[int]) -> float:
    return bed.score(as_prompt(bed, p), completion)["correct"]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("items", [("carol", "alice", "bob"), ("zoe", "ben", "amy", "leo")])
def test_rules_accept_exactly_the_enumerated_answers(task, items):
    p = problem(task, items)
    valid = set(p.valid_answers())
    pool = [*items, "dave", "emma"]  # the inputs, the given word and an outsider
    n = len(items)
    checked = 0
    for length in (n - 1, n, n + 1):
        for cand in itertools.product(pool, repeat=length):
            assert p.is_correct(cand) == (cand in valid), (task, cand)
            checked += 1
    assert checked > 700


@pytest.mark.parametrize(
    "task, answers",
    [
        ("copy", [("carol", "alice", "bob")]),
        ("reverse", [("bob", "alice", "carol")]),
        ("sort", [("alice", "bob", "carol")]),
        ("insert_index", [("carol", "dave", "alice", "bob")]),
        ("remove_index", [("carol", "bob")]),
        ("replace_index", [("carol", "dave", "bob")]),
        (
            "insert_random",
            [
                ("dave", "carol", "alice", "bob"),
                ("carol", "dave", "alice", "bob"),
                ("carol", "alice", "dave", "bob"),
                ("carol", "alice", "bob", "dave"),
            ],
        ),
        ("remove_random", [("alice", "bob"), ("carol", "bob"), ("carol", "alice")]),
        ("replace_random", [("dave", "alice", "bob"), ("carol", "dave", "bob"), ("carol", "alice", "dave")]),
    ],
)
def test_valid_answers_by_hand(task, answers):
    assert problem(task).valid_answers() == answers


def test_shuffle_answers_are_all_other_permutations():
    p = problem("shuffle", ("carol", "alice", "bob", "zoe"))
    answers = p.valid_answers()
    assert len(answers) == 23 == len(set(answers))
    assert p.items not in answers


def test_index_is_one_based_and_checked():
    assert problem("insert_index", index=1).valid_answers() == [("dave", "carol", "alice", "bob")]
    assert problem("insert_index", index=4).valid_answers() == [("carol", "alice", "bob", "dave")]
    assert problem("remove_index", index=3).valid_answers() == [("carol", "alice")]
    for task, index in [("remove_index", 4), ("replace_index", 0), ("insert_index", 5)]:
        with pytest.raises(ValueError, match="outside"):
            problem(task, index=index)
    with pytest.raises(ValueError, match="word"):
        ListProblem("copy", ("a", "b"), word="c")


def test_prompt_format():
    assert problem("insert_index").prompt_text() == "insert_index 2 dave : carol alice bob ="
    assert problem("insert_random").prompt_text() == "insert_random dave : carol alice bob ="
    assert problem("remove_index").prompt_text() == "remove_index 2 : carol alice bob ="
    assert problem("remove_random").prompt_text() == "remove_random : carol alice bob ="
    assert problem("replace_index").prompt_text() == "replace_index 2 dave : carol alice bob ="
    assert problem("sort").prompt_text() == "sort : carol alice bob ="


def test_scorer_accepts_valid_answers_through_token_ids(bed):
    for task in TASKS:
        p = problem(task, ("carol", "alice", "bob", "zoe", "ben", "amy"), index=3)
        for ans in p.valid_answers():
            assert score(bed, p, ids_of(bed, ans)) == 1.0, (task, ans)


@pytest.mark.parametrize(
    "task, answer",
    [
        ("copy", ["carol", "alice", "emma"]),  # one item off
        ("copy", ["carol", "alice"]),  # one item missing
        ("copy", ["carol", "alice", "bob", "bob"]),  # extra item
        ("sort", ["alice", "carol", "bob"]),
        ("reverse", ["carol", "alice", "bob"]),
        ("shuffle", ["carol", "alice", "bob"]),  # equal to the input
        ("shuffle", ["alice", "alice", "bob"]),  # duplicated item
        ("shuffle", ["alice", "carol", "dave"]),  # foreign item
        ("insert_index", ["carol", "alice", "dave", "bob"]),  # wrong index
        ("insert_index", ["dave", "carol", "alice", "bob"]),  # 0-based reading
        ("insert_random", ["carol", "alice", "bob"]),  # nothing inserted
        ("insert_random", ["carol", "dave", "bob", "alice"]),  # inserted and reordered
        ("insert_random", ["carol", "emma", "alice", "bob"]),  # wrong item inserted
        ("insert_random", ["dave", "carol", "alice", "bob", "dave"]),  # inserted twice
        ("remove_index", ["alice", "bob"]),  # wrong index
        ("remove_random", ["carol", "alice", "bob"]),  # nothing removed
        ("remove_random", ["carol"]),  # two removed
        ("remove_random", ["bob", "carol"]),  # removed and reordered
        ("replace_index", ["dave", "alice", "bob"]),  # wrong index
        ("replace_random", ["carol", "alice", "bob"]),  # replaced by the same item
        ("replace_random", ["carol", "emma", "bob"]),  # replaced by another item
        ("replace_random", ["dave", "dave", "bob"]),  # two replaced
        ("replace_random", ["carol", "alice", "bob", "dave"]),  # inserted instead
    ],
)
def test_scorer_rejects_near_misses(bed, task, answer):
    assert score(bed, problem(task), ids_of(bed, answer)) == 0.0


def test_completion_parsing(bed):
    p = problem("copy")
    good = ids_of(bed, p.items)
    assert score(bed, p, good) == 1.0
    after_eos = good[:4] + encode(bed.tokenizer, "zoe 3 =") + [EOS_ID]
    assert score(bed, p, after_eos) == 1.0  # whatever follows the first EOS is ignored
    for bad in (
        good[:3] + [MASK_ID] + good[4:],  # mask before EOS
        good[:3] + [PAD_ID] + good[4:],  # pad before EOS
        good[:3] + encode(bed.tokenizer, "=") + good[4:],  # separator before EOS
        good[:3] + encode(bed.tokenizer, "zoe ben amy leo ben"),  # trailing names, no EOS
        [EOS_ID] * bed.gen_length,  # empty answer
    ):
        assert score(bed, p, bad) == 0.0
    garbage = bed.score(as_prompt(bed, p), good[:3] + [MASK_ID] + good[4:])
    assert garbage["well_formed"] == 0.0 and garbage["task_copy"] == 0.0
    # an answer that fills gen_length exactly needs no EOS
    big = ListTasks(gen_length=8, tasks=["copy"], min_items=7, max_items=7)
    p7 = ListProblem("copy", tuple(big.names[:7]))
    assert score(big, p7, ids_of(big, p7.items, eos=False) + encode(big.tokenizer, "zoe")) == 0.0
    assert score(big, p7, ids_of(big, p7.items)) == 1.0


def test_examples_are_valid_padded_and_deterministic(bed):
    examples = bed.examples(500, seed=0)
    assert examples == bed.examples(500, seed=0) and examples != bed.examples(500, seed=1)
    seen = Counter()
    for e in examples:
        text = decode(bed.tokenizer, e.prompt).split()
        assert text[-1] == "=" and ":" in text
        task = text[0]
        head, items = text[1 : text.index(":")], tuple(text[text.index(":") + 1 : -1])
        index = int(head[0]) if task.endswith("_index") else None
        word = head[-1] if task in {"insert_index", "insert_random", "replace_index", "replace_random"} else None
        assert 3 <= len(items) <= 6 and len(set(items)) == len(items) and word not in items
        assert len(e.completion) == bed.gen_length
        answer = decode(bed.tokenizer, e.completion).split()
        k = len(answer)
        assert e.completion[k:] == [EOS_ID] * (bed.gen_length - k) and k < bed.gen_length
        assert ListProblem(task, items, word, index).is_correct(answer)
        seen[task] += 1
    assert set(seen) == set(TASKS)


@pytest.mark.parametrize("task, n_answers", [("shuffle", 5), ("insert_random", 4), ("remove_random", 3)])
def test_random_task_answers_are_uniform(task, n_answers):
    bed = ListTasks(tasks=[task], min_items=3, max_items=3)
    counts = Counter()
    for e in bed.examples(3000, seed=7):
        prompt = decode(bed.tokenizer, e.prompt).split()
        items = prompt[prompt.index(":") + 1 : -1]
        answer = decode(bed.tokenizer, e.completion).split()
        # the answer's pattern: where each output came from (or "new" for the inserted word)
        counts[tuple(items.index(a) if a in items else -1 for a in answer)] += 1
    assert len(counts) == n_answers
    expected = 3000 / n_answers
    assert all(abs(c - expected) < 5 * expected**0.5 for c in counts.values()), counts


def test_prompts_round_trip(bed):
    prompts = bed.prompts(50, seed=3)
    assert [p.ids for p in prompts] == [p.ids for p in bed.prompts(50, seed=3)]
    for pr, pb in zip(prompts, bed.problems(50, seed=3), strict=True):
        assert decode(bed.tokenizer, pr.ids) == pb.prompt_text()
        assert pr.meta == {"task": pb.task, "items": list(pb.items), "word": pb.word, "index": pb.index}
        best = ids_of(bed, pb.valid_answers()[0])
        assert bed.score(pr, best) == {"correct": 1.0, "well_formed": 1.0, f"task_{pb.task}": 1.0}


def test_configuration_is_validated():
    assert isinstance(ListTasks(), testbed.Testbed)
    with pytest.raises(ValueError, match="EOS"):
        ListTasks(gen_length=7)  # a 7-item insert answer would leave no EOS
    ListTasks(gen_length=7, tasks=["copy", "sort"])  # 6-item answers fit
    with pytest.raises(ValueError, match="unknown"):
        ListTasks(tasks=["copy", "rotate"])
    with pytest.raises(ValueError):
        ListTasks(min_items=4, max_items=3)
