"""Which vocabulary the tasks use: chosen by gin or the environment when first needed.

SeqIO tasks take their vocabulary when they register, i.e. on `import clinical_t5x.tasks`,
which happens while gin files are still being parsed. So the tasks hold a `LazyVocabulary`
that asks `vocabulary_for()` on first use, when the variant's `VOCABULARY` macro is bound.

Names: `t5` (T5's pieces + tags), `mimic_cased`, `mimic_lower` (pieces trained on MIMIC),
`synthetic` (the built-in synthetic default's own vocabulary), or a vocabulary folder path.
A name is looked up as `$CLINICAL_T5X_VOCAB_DIR/<name>/`, or `$CLINICAL_T5X_VOCAB_DIR` itself
when that is one vocabulary folder whose case agrees with the name.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import gin
import seqio
import tensorflow as tf

from clinical_t5x.text import vocab as vocab_lib
from clinical_t5x.data import synthetic_default

VOCAB_DIR_ENV = "CLINICAL_T5X_VOCAB_DIR"
NAMES = ("t5", "mimic_cased", "mimic_lower", "synthetic")


def _is_vocab_folder(path: str) -> bool:
    return tf.io.gfile.exists(os.path.join(path, vocab_lib.CONFIG_NAME))


def _bound_macro() -> str | None:
    """The `VOCABULARY` macro of the parsed gin files, if any (the variant files set it)."""
    try:
        return gin.query_parameter("%VOCABULARY")
    except ValueError:
        return None


def _folder_for(name: str) -> str:
    """The vocabulary folder a name (or path) stands for, with an error saying what was expected."""
    if name not in NAMES:
        if not _is_vocab_folder(name):
            raise FileNotFoundError(f"VOCABULARY={name!r}: neither one of {NAMES} nor a vocabulary "
                                    f"folder (no {vocab_lib.CONFIG_NAME} there)")
        return name
    root = os.environ.get(VOCAB_DIR_ENV)
    if not root:
        raise FileNotFoundError(f"VOCABULARY={name!r} needs ${VOCAB_DIR_ENV}: a vocabulary folder, or "
                                f"a folder holding {name}/ (build it with `clinical-t5x vocab`)")
    for folder in (os.path.join(root, name), root):
        if _is_vocab_folder(folder):
            return folder
    raise FileNotFoundError(f"VOCABULARY={name!r}: no {vocab_lib.CONFIG_NAME} in {root}/{name} nor in {root}")


def _check_case(name: str, vocabulary: vocab_lib.ClinicalVocabulary) -> None:
    """A folder given directly must be the kind the variant asked for (e.g. not cased for scratch)."""
    if name in ("t5", "mimic_cased", "mimic_lower") and vocabulary.lowercase != (name == "mimic_lower"):
        case = "lower-cased" if vocabulary.lowercase else "cased"
        raise ValueError(f"VOCABULARY={name!r} but {vocabulary.directory} holds a {case} vocabulary")


@gin.configurable(module="clinical_t5x.tasks")
def vocabulary_for(variant_vocab: str | None = None) -> vocab_lib.ClinicalVocabulary:
    """The vocabulary for a variant name or folder (gin: `vocabulary_for.variant_vocab`).

    Unset, it follows the gin macro `VOCABULARY`, then `$CLINICAL_T5X_VOCAB_DIR` as one folder.
    t5x's model vocabulary should come from here too, so task and model always agree.
    """
    name = variant_vocab or _bound_macro()
    if name == "synthetic":
        return vocab_lib.load(synthetic_default.vocab_dir())  # built on first use
    if name is None:
        root = os.environ.get(VOCAB_DIR_ENV)
        if not root or not _is_vocab_folder(root):
            raise FileNotFoundError(f"no vocabulary chosen: bind gin VOCABULARY (one of {NAMES}) or set "
                                    f"${VOCAB_DIR_ENV} to a vocabulary folder")
        return vocab_lib.load(root)
    vocabulary = vocab_lib.load(_folder_for(name))
    _check_case(name, vocabulary)
    return vocabulary


class LazyVocabulary(seqio.Vocabulary):
    """A seqio vocabulary that resolves (and re-resolves) its target each time it is used.

    Cheap to resolve: `vocab.load` caches per folder. Equal to another LazyVocabulary with the
    same resolver, and to whatever vocabulary it currently resolves to (t5x compares the task's
    vocabulary with the model's).
    """

    def __init__(self, resolve: Callable[[], seqio.Vocabulary], name: str):
        super().__init__(extra_ids=0)
        self._resolve = resolve
        self._name = name

    @property
    def target(self) -> seqio.Vocabulary:
        return self._resolve()

    def __getattr__(self, attribute: str):
        """Everything else (`sentinel_id`, `tag_ids`, `lowercase`, ...) is the target's."""
        if attribute.startswith("__") or attribute in ("_resolve", "_name"):
            raise AttributeError(attribute)
        return getattr(self.target, attribute)

    @property
    def bos_id(self) -> int | None:
        return self.target.bos_id

    @property
    def extra_ids(self) -> int:
        return self.target.extra_ids

    @property
    def eos_id(self) -> int | None:
        return self.target.eos_id

    @property
    def unk_id(self) -> int | None:
        return self.target.unk_id

    @property
    def pad_id(self) -> int:
        return self.target.pad_id

    @property
    def vocab_size(self) -> int:
        return self.target.vocab_size

    @property
    def _base_vocab_size(self) -> int:
        return self.target.vocab_size

    def encode(self, s):
        return self.target.encode(s)

    def decode(self, ids):
        return self.target.decode(ids)

    def encode_tf(self, s):
        return self.target.encode_tf(s)

    def decode_tf(self, ids):
        return self.target.decode_tf(ids)

    _encode, _decode, _encode_tf, _decode_tf = encode, decode, encode_tf, decode_tf

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazyVocabulary):
            return self._name == other._name
        return self.target == other

    def __hash__(self) -> int:
        return hash(self._name)

    def __repr__(self) -> str:
        return f"LazyVocabulary({self._name})"
