"""Downstream SeqIO tasks: registration, folders, exact examples, fractions, window sizes."""
from __future__ import annotations

from pathlib import Path

import gin
import numpy as np
import pytest
import seqio

from clinical_t5x import tasks
from clinical_t5x.data import downstream as readers
from clinical_t5x.data import downstream_examples, synth, synth_downstream
from clinical_t5x.data.downstream import Answer, Question
from clinical_t5x.tasks import downstream
from clinical_t5x.tasks.vocabularies import VOCAB_DIR_ENV
from clinical_t5x.text import vocab as vocab_lib
from clinical_t5x.text import vocab_build

SIZES = {"mednli": (40, 6, 6), "radqa": (10, 2, 2), "clip": (6, 2, 2)}
LENGTHS = {"inputs": 1024, "targets": 64}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return synth_downstream.write_downstream(tmp_path_factory.mktemp("bench"), seed=5, sizes=SIZES)


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory) -> Path:
    return vocab_build.build_synthetic_vocab(tmp_path_factory.mktemp("vocab"), vocab_size=600)


@pytest.fixture(autouse=True)
def env(monkeypatch, folders, vocab_dir):
    gin.clear_config()
    monkeypatch.setenv(VOCAB_DIR_ENV, str(vocab_dir))
    for task, folder in folders.items():
        monkeypatch.setenv(downstream.DIR_ENVS[task], str(folder))
    yield
    gin.clear_config()


def _dataset(name: str, split: str) -> list[dict]:
    ds = seqio.get_mixture_or_task(name).get_dataset(LENGTHS, split=split, shuffle=False, num_epochs=1)
    return list(ds.as_numpy_iterator())


def test_all_tasks_registered_on_import(monkeypatch):
    for task in downstream.TASKS:
        monkeypatch.setenv(downstream.DIR_ENVS[task], "/nonexistent")
        for percent in (*downstream.FRACTIONS, 100):
            registered = seqio.TaskRegistry.get(downstream.task_name(task, percent))
            assert set(registered.output_features) == {"inputs", "targets"}
            assert registered.metric_fns
    assert tasks.downstream is downstream
    with pytest.raises(FileNotFoundError, match="does not exist"):
        downstream.downstream_dir("mednli")


def test_folder_from_gin_then_env(monkeypatch, folders, tmp_path):
    gin.parse_config(f"clinical_t5x.tasks.downstream_dir.clip = '{tmp_path}'")
    assert downstream.downstream_dir("clip") == str(tmp_path)
    assert downstream.downstream_dir("radqa") == str(folders["radqa"])
    monkeypatch.delenv(downstream.DIR_ENVS["radqa"])
    with pytest.raises(FileNotFoundError, match="CLINICAL_T5X_RADQA_DIR"):
        downstream.downstream_dir("radqa")


@pytest.mark.slow
@pytest.mark.parametrize("task", downstream.TASKS)
def test_examples_are_the_formatted_records(task, folders, vocab_dir):
    vocabulary = vocab_lib.load(vocab_dir)
    got = _dataset(task, "validation")
    expected = downstream.build_examples(task, "validation", vocabulary)
    assert len(got) == len(expected) > 0
    for example, text in zip(got, expected):
        assert example["inputs_pretokenized"].decode() == text["inputs"]
        assert example["targets_pretokenized"].decode() == text["targets"]
        assert example["example_id"].decode() == text["example_id"]
        assert list(example["inputs"]) == vocabulary.encode(text["inputs"]) + [vocabulary.eos_id]
    if task == "mednli":  # and the records are the reader's
        first = readers.read_mednli(folders["mednli"], "validation")[0]
        assert expected[0] == downstream_examples.mednli_example(first)


@pytest.mark.slow
def test_fraction_tasks_nested_train_only(vocab_dir):
    vocabulary = vocab_lib.load(vocab_dir)

    def ids(task: str, percent: int, split: str = "train") -> set[str]:
        return {e["example_id"] for e in downstream.build_examples(task, split, vocabulary, percent)}

    mednli = {p: ids("mednli", p) for p in (5, 10, 25, 100)}
    assert [len(mednli[p]) for p in (5, 10, 25, 100)] == [2, 4, 10, 40]
    assert mednli[5] < mednli[10] < mednli[25] < mednli[100]
    assert ids("mednli", 5, "test") == ids("mednli", 100, "test")
    assert ids("clip", 1) < ids("clip", 25) < ids("clip", 100)
    assert ids("radqa", 10) < ids("radqa", 100)
    registered = {e["example_id"].decode() for e in _dataset("mednli_frac5", "train")}
    assert registered == mednli[5]


def test_radqa_windows_fit_the_real_vocabulary(vocab_dir):
    vocabulary = vocab_lib.load(vocab_dir)
    context = synth._Writer("mimic3", 0, stream="windows").body(300)
    answer = "a 2 cm mass"
    context = f"{context} The liver shows {answer}."
    question = Question("q", "1", context, "What is seen in the liver?",
                        (Answer(answer, context.rindex(answer)),), False)
    windows = downstream_examples.radqa_examples(question, lambda t: len(vocabulary.encode(t)))
    lengths = [len(vocabulary.encode(w["inputs"])) for w in windows]
    assert len(windows) > 2 and max(lengths) <= downstream_examples.RADQA_MAX_TOKENS - 1
    assert min(lengths[:-1]) > 0.9 * downstream_examples.RADQA_MAX_TOKENS  # windows are used fully
    assert [w["targets"] for w in windows][-1] == answer
    assert np.all([w["targets"] == downstream_examples.NO_ANSWER for w in windows[:-2]])


@pytest.mark.parametrize("task, budget", [("radqa", 64), ("clip", 64)])
def test_context_tokens_binding_cuts_windows_and_contexts_to_its_budget(task, budget, vocab_dir):
    vocabulary = vocab_lib.load(vocab_dir)
    default = downstream.build_examples(task, "validation", vocabulary)
    gin.parse_config(f"clinical_t5x.tasks.context_tokens.{task} = {budget}")
    short = downstream.build_examples(task, "validation", vocabulary)
    lengths = [len(vocabulary.encode(ex["inputs"])) for ex in short]
    assert max(lengths) <= budget - 1 < max(len(vocabulary.encode(ex["inputs"])) for ex in default)
    if task == "radqa":  # more windows, and every question still has the window holding its answer
        assert len(short) > len(default)
        answered = {ex["example_id"] for ex in default if ex["targets"] != downstream_examples.NO_ANSWER}
        assert answered == {ex["example_id"] for ex in short if ex["targets"] != downstream_examples.NO_ANSWER}
    else:  # one example per sentence, each still ending in its sentence
        assert [ex["targets"] for ex in short] == [ex["targets"] for ex in default]
        assert all(ex["inputs"].endswith(d["inputs"].rsplit(" ; ", 1)[1])
                   for ex, d in zip(short, default))
