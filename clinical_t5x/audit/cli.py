"""`clinical-t5x audit`: canary exposure, membership inference and extraction for one checkpoint.

    clinical-t5x audit --checkpoint CKPT --vocab VOCAB_DIR --data PREPARED_DIR --out REPORT_DIR
        [--reference CKPT] [--notes 2000] [--seed 0]

CKPT is any t5x-layout checkpoint (the built-in trainer's, t5x's Orbax or msgpack, or
`import-hf`'s): a MODEL_DIR (newest step) or one `checkpoint_<step>` folder. PREPARED_DIR is
`clinical-t5x prepare`'s output; its `canaries.json` (from `--canaries`) drives the exposure
test, which is skipped without one. Writes REPORT_DIR/report.json, report.md, roc.png and
exposure.png, owner-only. Nothing printed or written holds note text or a secret: notes are
named by id, canaries by index.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from clinical_t5x.audit import exposure, extraction, membership, notes, report
from clinical_t5x.audit.scoring import Scorer
from clinical_t5x.data import canaries as canary_notes
from clinical_t5x.data import shards
from clinical_t5x.text import span_corruption, vocab as vocab_lib

FORMAT = "clinical_t5x.audit/1"


def _canary_example(vocabulary, canary: canary_notes.Canary) -> list[int]:
    """Encoder input: the canary's sentence with the secret replaced by `<extra_id_0>`."""
    before, after = canary.template.split(canary_notes.PLACEHOLDER)
    return (vocabulary.encode(before) + [vocabulary.sentinel_id(0)] + vocabulary.encode(after)
            + [vocabulary.eos_id])


def _secret_target(vocabulary, secret: str) -> list[int]:
    """Decoder target `<extra_id_0> secret <extra_id_1>` (EOS appended, as every target)."""
    return ([vocabulary.sentinel_id(0)] + vocabulary.encode(secret) + [vocabulary.sentinel_id(1)]
            + [vocabulary.eos_id])


class _Exposure:
    """The exposure test's sequences, then its estimates from their scores."""

    def __init__(self, vocabulary, canaries: Sequence[canary_notes.Canary], space_size: int,
                 candidates: int, seed: int):
        self.canaries, self.space_size, self.candidates = canaries, space_size, candidates
        targets: dict[str, list[int]] = {}
        self.inputs: list[list[int]] = []
        self.targets: list[list[int]] = []
        for canary in canaries:
            secrets = [canary.secret, *exposure.sample_candidates(canary.secret, candidates, seed)]
            source = _canary_example(vocabulary, canary)
            for secret in secrets:
                if secret not in targets:
                    targets[secret] = _secret_target(vocabulary, secret)
                self.inputs.append(source)
                self.targets.append(targets[secret])

    def results(self, scores: np.ndarray) -> dict:
        per_canary = []
        for i, canary in enumerate(self.canaries):
            block = scores[i * (self.candidates + 1):(i + 1) * (self.candidates + 1)]
            per_canary.append(exposure.estimate(canary.index, canary.repeats, block[0], block[1:],
                                                self.space_size))
        return {"space_size": self.space_size, "log2_space_size": round(math.log2(self.space_size), 3),
                "candidates": self.candidates, "resolution_limit_bits": round(math.log2(self.candidates + 1), 3),
                "no_learning_bits": {"mean": round(exposure.NO_LEARNING_MEAN, 3),
                                     "median": exposure.NO_LEARNING_MEDIAN},
                "by_repeats": exposure.summary_by_repeats(per_canary),
                "canaries": [result.as_dict() for result in per_canary]}


class _Membership:
    """The span-corrupted chunks of both note samples, then both attacks from their scores."""

    def __init__(self, vocabulary, members: Sequence[notes.Note], nonmembers: Sequence[notes.Note],
                 tokens: dict[tuple[str, str], list[int]], inputs_length: int, masks: int, max_chunks: int,
                 seed: int):
        self.notes = [*members, *nonmembers]
        self.members = len(members)
        chunk_length = span_corruption.chunk_length_for(inputs_length)
        sentinels = [vocabulary.sentinel_id(i) for i in range(span_corruption.MAX_SENTINELS)]
        self.inputs: list[list[int]] = []
        self.targets: list[list[int]] = []
        self.owner: list[int] = []  # note index of each example
        for index, note in enumerate(self.notes):
            pairs = membership.note_examples(tokens[note.source, note.note_id], chunk_length, max_chunks,
                                             masks, seed, index, sentinels, vocabulary.eos_id)
            for inputs, targets in pairs:
                self.inputs.append(inputs)
                self.targets.append(targets)
                self.owner.append(index)

    def note_scores(self, log_probs: np.ndarray) -> np.ndarray:
        """Mean log-probability per target token of each note."""
        counts = np.array([len(t) for t in self.targets], np.float64)
        owner = np.array(self.owner)
        return (np.bincount(owner, log_probs, len(self.notes))
                / np.maximum(np.bincount(owner, counts, len(self.notes)), 1.0))

    def _attack(self, scores: np.ndarray, seed: int) -> tuple[dict, dict]:
        by_note = membership.attack_summary(scores[:self.members], scores[self.members:], seed)
        patients = membership.mean_by([(i < self.members, note.subject_id) for i, note in enumerate(self.notes)],
                                      scores)
        by_patient = membership.attack_summary([v for (member, _), v in patients.items() if member],
                                               [v for (member, _), v in patients.items() if not member], seed)
        return by_note, by_patient

    def results(self, target: np.ndarray, reference: np.ndarray | None, seed: int) -> tuple[dict, dict]:
        """(the report section, the note-level scores of each attack for the ROC plot)."""
        attacks = {"loss": self.note_scores(target)}
        if reference is not None:
            attacks["likelihood_ratio"] = attacks["loss"] - self.note_scores(reference)
        section: dict = {"notes": {"members": self.members, "nonmembers": len(self.notes) - self.members},
                         "attacks": {}, "per_patient": {}}
        curves = {}
        for name, scores in attacks.items():
            section["attacks"][name], section["per_patient"][name] = self._attack(scores, seed)
            curves[name] = membership.roc_curve(scores[:self.members], scores[self.members:])
        return section, curves


def _masked_stretches(vocabulary, sample: Sequence[notes.Note], tokens, k: int, window: int,
                      seed: int, stream: int) -> tuple[list[list[int]], list[list[int]]]:
    """Inputs and hidden stretches of the notes of `sample` long enough for a k-token stretch."""
    inputs, hidden = [], []
    for index, note in enumerate(sample):
        rng = np.random.default_rng([seed, 5, k, stream, index])
        found = extraction.masked_stretch(tokens[note.source, note.note_id], k, window, rng,
                                          vocabulary.sentinel_id(0), vocabulary.eos_id)
        if found is not None:
            inputs.append(found[0])
            hidden.append(found[1])
    return inputs, hidden


def _extraction(scorer: Scorer, vocabulary, stretches: dict, progress) -> dict:
    """Exact-match rates per stretch length, training against validation notes."""
    section = {}
    for k, ((train_inputs, train_hidden), (val_inputs, val_hidden)) in stretches.items():
        generated = scorer.greedy_decode(train_inputs + val_inputs, k + 2, progress)
        hits = [extraction.exact_match(g, h, vocabulary.sentinel_id(0))
                for g, h in zip(generated, train_hidden + val_hidden)]
        section[str(k)] = extraction.rate_summary(hits[:len(train_inputs)], hits[len(train_inputs):])
    return section


def _samples(data: Path, count: int, seed: int, hosts: set) -> tuple[list[notes.Note], list[notes.Note]]:
    """Equal-size samples of training and validation notes (canary hosts left out)."""
    members = notes.sample(data, "train", count, seed, exclude=hosts)
    nonmembers = notes.sample(data, "validation", count, seed)
    size = min(len(members), len(nonmembers))
    if size < 2:
        raise ValueError(f"{data}: membership needs training and validation notes; found "
                         f"{len(members)} and {len(nonmembers)}")
    return members[:size], nonmembers[:size]


def run(checkpoint: str | os.PathLike, vocab_dir: str | os.PathLike, data: str | os.PathLike,
        out: str | os.PathLike, reference: str | os.PathLike | None = None, num_notes: int = 2000,
        seed: int = 0, inputs_length: int = 512, candidates: int = exposure.MIN_CANDIDATES, masks: int = 4,
        max_chunks: int = 2, span_lengths: Sequence[int] = extraction.SPAN_LENGTHS, batch_size: int = 64,
        progress: bool = True) -> dict:
    """Runs the three tests on `checkpoint` and writes the report to `out`; returns report.json's
    contents. `num_notes` is split evenly between training and validation notes."""
    data, out = Path(data), Path(out)
    shards.read_manifest(data)  # a clear error for a dir that is not a finished prepare output
    vocabulary = vocab_lib.load(vocab_dir)
    scorer = Scorer(checkpoint, batch_size)
    if vocabulary.vocab_size > scorer.vocab_size:
        raise ValueError(f"{vocab_dir}: {vocabulary.vocab_size} ids, but the checkpoint's model has "
                         f"{scorer.vocab_size}: not the vocabulary it was trained with")
    reference_scorer = Scorer(reference, batch_size) if reference is not None else None
    canaries, space_size = canary_notes.read(data)
    members, nonmembers = _samples(data, num_notes // 2, seed, {k for c in canaries for k in c.notes})
    tokens = {(n.source, n.note_id): vocabulary.encode(n.text) for n in [*members, *nonmembers]}

    canary_test = _Exposure(vocabulary, canaries, space_size, candidates, seed) if canaries else None
    member_test = _Membership(vocabulary, members, nonmembers, tokens, inputs_length, masks, max_chunks, seed)
    window = span_corruption.chunk_length_for(inputs_length)
    stretches = {k: tuple(_masked_stretches(vocabulary, group, tokens, k, window, seed, stream)
                          for stream, group in enumerate((members, nonmembers))) for k in span_lengths}
    total = ((len(canary_test.inputs) if canary_test else 0)
             + len(member_test.inputs) * (2 if reference_scorer else 1)
             + sum(len(group[0]) for pair in stretches.values() for group in pair))
    with tqdm(total=total, desc="audit", unit="seq", file=sys.stderr, disable=not progress) as bar:
        section = {"checkpoint": str(scorer.step_dir), "reference": str(reference_scorer.step_dir)
                   if reference_scorer else None, "data": str(data), "format": FORMAT,
                   "settings": {"notes": num_notes, "seed": seed, "inputs_length": inputs_length,
                                "masks_per_chunk": masks, "chunks_per_note": max_chunks,
                                "candidates": candidates, "span_lengths": list(span_lengths)}}
        section["exposure"] = (canary_test.results(scorer.log_probs(canary_test.inputs, canary_test.targets,
                                                                    bar.update))
                               if canary_test else None)
        target_scores = scorer.log_probs(member_test.inputs, member_test.targets, bar.update)
        reference_scores = (reference_scorer.log_probs(member_test.inputs, member_test.targets, bar.update)
                            if reference_scorer else None)
        section["membership"], curves = member_test.results(target_scores, reference_scores, seed)
        section["extraction"] = _extraction(scorer, vocabulary, stretches, bar.update)
    report.write(out, section, curves)
    return section


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="clinical-t5x audit", description=__doc__.split("\n")[0],
        epilog="Prints and writes figures and ids only, never note text or secrets.")
    parser.add_argument("--checkpoint", type=Path, required=True, help="MODEL_DIR or checkpoint_<step> folder")
    parser.add_argument("--vocab", type=Path, required=True, help="the vocabulary folder the model was trained with")
    parser.add_argument("--data", type=Path, required=True, help="`clinical-t5x prepare` output")
    parser.add_argument("--out", type=Path, required=True, help="report folder (created owner-only)")
    parser.add_argument("--reference", type=Path,
                        help="a model not trained on these notes (e.g. the init checkpoint): adds the "
                             "likelihood-ratio attack")
    parser.add_argument("--notes", type=int, default=2000, help="notes sampled, half training, half validation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples, masks and candidates")
    parser.add_argument("--inputs-length", type=int, default=512,
                        help="encoder length the model was trained with (default 512)")
    parser.add_argument("--candidates", type=int, default=exposure.MIN_CANDIDATES,
                        help=f"secrets sampled per canary to estimate its rank (>= {exposure.MIN_CANDIDATES})")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per scoring batch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        result = run(args.checkpoint, args.vocab, args.data, args.out, reference=args.reference,
                     num_notes=args.notes, seed=args.seed, inputs_length=args.inputs_length,
                     candidates=args.candidates, batch_size=args.batch_size, progress=not args.no_progress)
    except (OSError, ValueError) as e:  # bad paths or inputs: messages name files, never text
        print(f"clinical-t5x audit: error: {e}", file=sys.stderr)
        return 2
    print(report.summary(result), file=sys.stderr)
    print(f"wrote {args.out / report.REPORT_MD}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
