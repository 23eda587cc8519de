"""`clinical-t5x contamination`: downstream examples that share a 13-word n-gram with pretraining.

A downstream score means little when the model saw the test text in pretraining. Following
GPT-3's contamination study, an example is contaminated when any 13-word window of its text
(words as `near_dedup.words` makes them: lowercased, every DEID placeholder, blank or tag one
word, so raw benchmark text compares with prepared shards) also occurs in the prepared shards.
An example shorter than 13 words cannot match and is counted as such.

The downstream windows (small) are indexed in memory and every prepared shard is streamed past
them once; memory is bounded by the benchmarks, not the corpus. The report names examples by
id, never by text.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from clinical_t5x import owner_only
from clinical_t5x.data import downstream, shards
from clinical_t5x.data.near_dedup import words

NGRAM = 13


def ngrams(text: str, n: int = NGRAM) -> set[tuple[bytes, ...]]:
    tokens = words(text)
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def _texts(dataset: str, folder: Path, split: str) -> list[tuple[str, list[str]]]:
    """(example id, its texts) of one split; each text is matched on its own (a CLIP
    document is one text: its sentences in order)."""
    if dataset == "mednli":
        return [(p.pair_id, [p.premise, p.hypothesis]) for p in downstream.read_mednli(folder, split)]
    if dataset == "radqa":
        return [(q.qa_id, [q.context, q.question]) for q in downstream.read_radqa(folder, split)]
    return [(str(d.doc_id), [" ".join(s.text for s in d.sentences)]) for d in downstream.read_clip(folder, split)]


def _prepared_texts(prepared: str | Path) -> Iterator[str]:
    manifest = shards.read_manifest(prepared)
    for split, by_source in manifest["shards"].items():
        for names in by_source.values():
            for name in names:
                for record in shards.read_examples(Path(prepared) / split / name):
                    yield record["text"]


def report(prepared: str | Path, data: str | Path) -> dict:
    """{dataset: {split: examples, too_short, contaminated, fraction, ids}} for every split found."""
    examples: dict[tuple[str, str], list[str]] = {}
    short: dict[tuple[str, str], int] = {}
    index: dict[tuple[bytes, ...], list[tuple[tuple[str, str], str]]] = defaultdict(list)
    for dataset, folder in downstream.dataset_folders(data).items():
        for split in downstream.SPLITS:
            key = (dataset, split)
            items = _texts(dataset, folder, split)
            examples[key] = [example_id for example_id, _ in items]
            short[key] = 0
            for example_id, texts in items:
                grams = set().union(*(ngrams(t) for t in texts))
                short[key] += not grams
                for gram in grams:
                    index[gram].append((key, example_id))
    firsts = {gram[0] for gram in index}
    hit: dict[tuple[str, str], set[str]] = defaultdict(set)
    for text in _prepared_texts(prepared):
        tokens = words(text)
        for i in range(len(tokens) - NGRAM + 1):
            if tokens[i] in firsts and (owners := index.get(tuple(tokens[i:i + NGRAM]))):
                for key, example_id in owners:
                    hit[key].add(example_id)
    result: dict = defaultdict(dict)
    for (dataset, split), ids in examples.items():
        found = [i for i in ids if i in hit[dataset, split]]
        result[dataset][split] = {"examples": len(ids), "too_short": short[dataset, split],
                                  "contaminated": len(found),
                                  "fraction": round(len(found) / len(ids), 6) if ids else 0.0, "ids": found}
    return dict(result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clinical-t5x contamination", description=__doc__.split("\n")[0])
    parser.add_argument("--prepared", type=Path, required=True, help="a `prepare` output folder")
    parser.add_argument("--data", type=Path, required=True,
                        help="downstream folder: mednli/, radqa/, clip/ (or one of them) in official layouts")
    parser.add_argument("--out", type=Path, help="also write the report (with every id) as JSON here")
    args = parser.parse_args(argv)
    try:
        result = report(args.prepared, args.data)
    except (OSError, ValueError) as e:  # messages name files and records, never text
        print(f"clinical-t5x contamination: error: {e}", file=sys.stderr)
        return 2
    for dataset, splits in result.items():
        for split, r in splits.items():
            shown = ", ".join(r["ids"][:20]) + (" ..." if len(r["ids"]) > 20 else "")
            print(f"{dataset} {split}: {r['contaminated']}/{r['examples']} examples share a {NGRAM}-word "
                  f"n-gram with pretraining ({100 * r['fraction']:.2f}%){': ' + shown if shown else ''}")
    if args.out is not None:
        with owner_only.open_file(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
