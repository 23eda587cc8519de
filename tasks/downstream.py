"""SeqIO tasks of the downstream benchmarks: `mednli`, `radqa`, `clip` and `<task>_frac{1,5,10,25}`.

Registered on `import clinical_t5x.tasks`, touching no file. Each reads the official files
(`clinical_t5x.data.downstream`) from its folder, resolved when a dataset is built: gin
`clinical_t5x.tasks.downstream_dir.<task>`, else `$CLINICAL_T5X_{MEDNLI,RADQA,CLIP}_DIR`.
Splits `train`, `validation`, `test`; a `_fracN` task keeps N% of the train records (MedNLI
pairs, RadQA questions, CLIP sentences: nested, by fixed seed) and the full validation/test.

Examples are made by `clinical_t5x.data.downstream_examples` (formats, DEID replacement, RadQA
and CLIP windows, counted with the task's own vocabulary), then tokenized with EOS appended.
Features: `inputs`, `targets`, `example_id` (and RadQA's `answers`), plus seqio's
`*_pretokenized` copies. The vocabulary is the pretraining tasks' one (`vocabulary_for`).
Metrics: `clinical_t5x.eval.metrics`, RadQA's scored per question over its windows.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable

import gin
import seqio
import tensorflow as tf

from clinical_t5x.data import downstream
from clinical_t5x.data import downstream_examples as examples
from clinical_t5x.eval import metrics
from clinical_t5x.tasks.vocabularies import LazyVocabulary, vocabulary_for

TASKS = ("mednli", "radqa", "clip")
FRACTIONS = (1, 5, 10, 25)
DIR_ENVS = {task: f"CLINICAL_T5X_{task.upper()}_DIR" for task in TASKS}


def task_name(task: str, percent: int = 100) -> str:
    """The registered name of a benchmark at a label fraction (100: the whole train split)."""
    return task if percent == 100 else f"{task}_frac{percent}"


@gin.configurable(module="clinical_t5x.tasks")
def downstream_dir(task: str, mednli: str | None = None, radqa: str | None = None,
                   clip: str | None = None) -> str:
    """A benchmark's folder: gin `downstream_dir.<task>`, else `$CLINICAL_T5X_<TASK>_DIR`."""
    path = {"mednli": mednli, "radqa": radqa, "clip": clip}[task] or os.environ.get(DIR_ENVS[task])
    if not path:
        raise FileNotFoundError(f"no {task} folder: set ${DIR_ENVS[task]} or gin "
                                f"`clinical_t5x.tasks.downstream_dir.{task}` (see docs/downstream.md)")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{task} folder {path} does not exist")
    return path


@gin.configurable(module="clinical_t5x.tasks")
def context_tokens(task: str, radqa: int = examples.RADQA_MAX_TOKENS,
                   clip: int = examples.CLIP_MAX_TOKENS) -> int:
    """The input budget RadQA windows and CLIP contexts are cut to: the paper's 1,024 and 512
    by default; gin `clinical_t5x.tasks.context_tokens.<task>` lowers it for short runs (small
    models, CPU), which then need TASK_FEATURE_LENGTHS' inputs no longer than it."""
    return {"radqa": radqa, "clip": clip}[task]


def _counter(vocabulary: seqio.Vocabulary) -> examples.TokenCounter:
    return examples.cached_counter(lambda text: len(vocabulary.encode(text)))


def _mednli(records, vocabulary):
    return [examples.mednli_example(pair) for pair in records]


def _radqa(records, vocabulary):
    count = _counter(vocabulary)
    budget = context_tokens("radqa")
    return [ex for question in records
            for ex in examples.radqa_examples(question, count, budget)]


def _clip_sentences(folder: str, split: str) -> list:
    """CLIP records are (document, sentence) pairs: fractions choose sentences, and each
    chosen sentence keeps its whole document around it."""
    return [(doc, s) for doc in downstream.read_clip(folder, split) for s in doc.sentences]


def _clip(records, vocabulary):
    count = _counter(vocabulary)
    wanted = {(doc.doc_id, s.index) for doc, s in records}
    documents = {doc.doc_id: doc for doc, _ in records}.values()  # file order
    return [ex for doc in documents
            for ex, s in zip(examples.clip_examples(doc, count, context_tokens("clip")),
                             doc.sentences)
            if (doc.doc_id, s.index) in wanted]


# task -> (read one split's records, a record's id for fractions, records -> examples).
_READERS: dict[str, tuple[Callable, Callable, Callable]] = {
    "mednli": (downstream.read_mednli, lambda pair: pair.pair_id, _mednli),
    "radqa": (downstream.read_radqa, lambda q: q.qa_id, _radqa),
    "clip": (_clip_sentences, lambda pair: f"{pair[0].doc_id}-{pair[1].index}", _clip),
}


def build_examples(task: str, split: str, vocabulary: seqio.Vocabulary, percent: int = 100,
                   folder: str | None = None) -> list[dict[str, str]]:
    """The text examples of a split, in file order (no TensorFlow): also for the built-in engine."""
    read, record_id, make = _READERS[task]
    records = read(folder or downstream_dir(task), split)
    if split == "train" and percent != 100:
        records = examples.fraction_subset(records, percent, record_id)
    return make(records, vocabulary)


def _dataset_fn(task: str, percent: int, vocabulary: seqio.Vocabulary,
                split: str, shuffle_files: bool = False, seed: int | None = None) -> tf.data.Dataset:
    made = build_examples(task, split, vocabulary, percent)
    if not made:
        raise ValueError(f"{task} {split}: no examples in {downstream_dir(task)}")
    return tf.data.Dataset.from_tensor_slices({key: [ex[key] for ex in made] for key in made[0]})


_METRICS = {
    "mednli": ([metrics.mednli], metrics.strip_text),
    "radqa": ([metrics.radqa_windows], metrics.radqa_postprocess),
    "clip": ([metrics.clip], metrics.strip_text),
}
PREPROCESSORS = (seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim)


def register() -> None:
    """Adds every downstream task (re-registering is harmless, e.g. on module reload)."""
    vocabulary = LazyVocabulary(vocabulary_for, "gin VOCABULARY")
    features = {name: seqio.Feature(vocabulary, add_eos=True) for name in ("inputs", "targets")}
    for task in TASKS:
        metric_fns, postprocess = _METRICS[task]
        for percent in (*FRACTIONS, 100):
            name = task_name(task, percent)
            seqio.TaskRegistry.remove(name)
            source = seqio.FunctionDataSource(
                functools.partial(_dataset_fn, task, percent, vocabulary),
                splits=downstream.SPLITS)
            seqio.TaskRegistry.add(name, source=source, preprocessors=list(PREPROCESSORS),
                                   output_features=features, postprocess_fn=postprocess,
                                   metric_fns=metric_fns)
