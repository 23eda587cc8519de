"""SeqIO span-corruption tasks and mixture (importable as `clinical_t5x.tasks`).

Importing registers, touching no file:
- `mimic3_span_corruption`, `mimic4_discharge_span_corruption`,
  `mimic4_radiology_span_corruption`: prepared shards of one source under the data dir
  (gin `clinical_t5x.tasks.data_dir.path`, else `$CLINICAL_T5X_DATA_DIR`);
- `mimic_span_corruption`: their mixture, rates proportional to each source's train bytes in
  the prepared manifest (read when the mixture is first used);
- `synthetic_span_corruption`: all sources of the built-in synthetic corpus, which is built in
  `$CLINICAL_T5X_CACHE` on first use, with its own vocabulary;
- the downstream benchmarks `mednli`, `radqa`, `clip` and their `_frac{1,5,10,25}` label
  subsets (see `clinical_t5x.tasks.downstream`).

The MIMIC tasks' vocabulary is the one gin's `VOCABULARY` macro names (see `vocabulary_for`).
Features `inputs` and `targets` end with EOS, as `seqio.EncDecFeatureConverter` and t5x expect.
"""
from __future__ import annotations

import functools

import seqio

from clinical_t5x.text import span_corruption
from clinical_t5x.data import synthetic_default
from clinical_t5x.tasks import downstream, sources
from clinical_t5x.tasks.sources import data_dir
from clinical_t5x.tasks.vocabularies import LazyVocabulary, vocabulary_for

__all__ = ["MIXTURE", "PREPROCESSORS", "SYNTHETIC_TASK", "TASKS", "data_dir", "output_features", "vocabulary_for"]

TASKS = {source: f"{source}_span_corruption" for source in sources.SOURCES}
MIXTURE = "mimic_span_corruption"
SYNTHETIC_TASK = "synthetic_span_corruption"

# Notes -> token ids (batched) -> [seqio cache point] -> span corruption -> EOS, as T5's tasks.
PREPROCESSORS = (
    functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
    span_corruption.tokenize_in_batches,
    seqio.CacheDatasetPlaceholder(),
    span_corruption.span_corruption,
    seqio.preprocessors.append_eos_after_trim,
)


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
    return {name: seqio.Feature(vocabulary, add_eos=True) for name in ("inputs", "targets")}


def _register_task(name: str, source: seqio.DataSource, vocabulary: seqio.Vocabulary) -> None:
    seqio.TaskRegistry.remove(name)  # re-importing (e.g. reload in a notebook) stays harmless
    seqio.TaskRegistry.add(name, source=source, preprocessors=list(PREPROCESSORS),
                           output_features=output_features(vocabulary), metric_fns=[])


def _register() -> None:
    selected = LazyVocabulary(vocabulary_for, "gin VOCABULARY")
    for source, name in TASKS.items():
        _register_task(name, sources.PreparedShards(data_dir, [source]), selected)
    seqio.MixtureRegistry.remove(MIXTURE)
    seqio.MixtureRegistry.add(
        MIXTURE, [(name, sources.manifest_bytes_rate(data_dir, source)) for source, name in TASKS.items()])
    _register_task(SYNTHETIC_TASK, sources.PreparedShards(synthetic_default.prepared_dir, sources.SOURCES),
                   LazyVocabulary(functools.partial(vocabulary_for, "synthetic"), "synthetic"))


_register()
downstream.register()
