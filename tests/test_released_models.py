"""The released Clinical-T5 folders end to end (docs/released_models.md), on their look-alikes:
`vocab --from-hf` and `import-hf` in both modes, a few steps of continued pretraining with the
built-in trainer, `export`, fine-tuning on synthetic MedNLI and the audit.

Each folder x mode costs minutes of CPU (TF input pipeline, three JAX compilations): heavy tier.
The unit-level links (ids, tag rows, logits through import -> export, refusals) are tested in
test_hf_folder_vocab.py and test_convert.py.
"""
from __future__ import annotations

import json
import logging
import re
import types

import gin
import numpy as np
import pytest
from transformers import AutoTokenizer

import released_lookalikes as lookalikes
from clinical_t5x import cli
from clinical_t5x.data import deid, synth_downstream, synthetic_default
from clinical_t5x.eval import architecture
from clinical_t5x.hf import convert
from clinical_t5x.text import vocab
from clinical_t5x.train import checkpoint_formats, trainer

pytestmark = pytest.mark.heavy

LENGTHS = {"inputs": 32, "targets": 8}
SENTINEL = re.compile(r"<extra_id_(\d+)>")


@pytest.fixture(scope="module", params=lookalikes.KINDS)
def source(request, tmp_path_factory):
    return lookalikes.build(request.param, tmp_path_factory.mktemp("hf") / request.param)


@pytest.fixture(scope="module", params=[False, True], ids=["folder-ids", "canonical"])
def imported(source, request, tmp_path_factory):
    """`clinical-t5x vocab --from-hf` and `import-hf` of `source`, through the console commands."""
    root = tmp_path_factory.mktemp("imported")
    mode = ["--canonical"] if request.param else []
    assert cli.main(["vocab", "--from-hf", str(source), "--out", str(root / "vocab"), *mode]) == 0
    assert cli.main(["import-hf", "--hf", str(source), "--out", str(root / "import"), *mode]) == 0
    return types.SimpleNamespace(source=source, vocab=root / "vocab", import_dir=root / "import",
                                 init=root / "import" / "checkpoint_0")


@pytest.fixture(autouse=True)
def clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def _pretraining_bindings(chain, model_dir) -> list[str]:
    """Span corruption on the synthetic corpus from the imported checkpoint; learning rate ~0,
    so the trained model must still be the source model. `init_known_vocab_rows` stops before
    the tags, as gin/builtin/base.gin's 32,100 does for T5-Base: the tag rows the source trained
    must still be kept (import-hf records them), not re-initialised from pieces."""
    fields = architecture.config_fields(checkpoint_formats.ParamReader(chain.init).shapes)
    first_tag = min(vocab.load(chain.vocab).tag_ids.values())
    return [f"MODEL_DIR = '{model_dir}'", f"VOCABULARY = '{chain.vocab}'",
            "MIXTURE_OR_TASK_NAME = 'mimic3_span_corruption'", "BATCH_SIZE = 8",
            f"TASK_FEATURE_LENGTHS = {LENGTHS}", "TRAIN_STEPS = 2", "EVAL_PERIOD = 0",
            "CHECKPOINT_PERIOD = 2", f"INIT_CHECKPOINT = '{chain.init}'", "LEARNING_RATE = 1e-12",
            f"train.init_known_vocab_rows = {first_tag}", *architecture.gin_bindings(fields)]


def _segments(batch: dict[str, np.ndarray]):
    """(inputs, targets) of every packed example in a batch, padding and EOS dropped."""
    for row in range(len(batch["encoder_input_tokens"])):
        for segment in set(batch["encoder_segment_ids"][row].tolist()) - {0}:
            inputs = batch["encoder_input_tokens"][row][batch["encoder_segment_ids"][row] == segment]
            targets = batch["decoder_target_tokens"][row][batch["decoder_segment_ids"][row] == segment]
            yield inputs[:-1].tolist(), targets[:-1].tolist()


def _check_masking(batches, names: list[str]) -> tuple[set[int], int]:
    """Every example masks with `<extra_id_0>`, `<extra_id_1>`, ... in order, named so by the
    vocabulary folder's own HF tokenizer (a tag used as a sentinel would be named as the tag),
    the targets starting with the first. Returns the sentinel ids seen and the tag tokens seen."""
    used, tags = set(), 0
    for batch in batches:
        for inputs, targets in _segments(batch):
            in_names, out_names = ([names[i] for i in ids] for ids in (inputs, targets))
            masks = [n for n in in_names if SENTINEL.fullmatch(n)]
            assert masks and masks == [f"<extra_id_{k}>" for k in range(len(masks))], in_names
            assert out_names[0] == "<extra_id_0>" and [n for n in out_names if SENTINEL.fullmatch(n)] == masks
            used |= {i for i, n in zip(inputs, in_names) if SENTINEL.fullmatch(n)}
            tags += sum(n in deid.TAGS for n in in_names + out_names)
    return used, tags


def test_continued_pretraining_masks_with_sentinels_never_tags_then_export_matches_source(
        imported, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CLINICAL_T5X_DATA_DIR", synthetic_default.prepared_dir())
    trainer.configure_gin(["gin/builtin/tiny.gin"], _pretraining_bindings(imported, tmp_path / "model"), [])
    folder_tokenizer = AutoTokenizer.from_pretrained(imported.vocab)
    names = folder_tokenizer.convert_ids_to_tokens(list(range(len(folder_tokenizer))))
    with caplog.at_level(logging.INFO, logger="clinical_t5x.text.span_corruption"):
        batches = trainer.make_dataset("mimic3_span_corruption", LENGTHS, "train", 8, range(1), 1,
                                       seed=0, shuffle=True).take(4).as_numpy_iterator()
        used, tags_seen = _check_masking(batches, names)
        result = trainer.train()
    assert result.exit_code == trainer.EXIT_OK and result.step == 2
    v = vocab.load(imported.vocab)
    assert tags_seen and not used & set(v.tag_ids.values())
    assert used <= {v.sentinel_id(i) for i in range(vocab.NUM_SENTINELS)}
    logged = [r.getMessage() for r in caplog.records if "span corruption masks with" in r.getMessage()]
    assert logged and all(f"= ids {v.sentinel_id(0)}" in m for m in logged), logged  # the run says which

    out = convert.export(tmp_path / "model", imported.vocab, tmp_path / "hf")
    lookalikes.assert_same_model(imported.source, imported.import_dir, out)


def test_finetune_mednli_from_the_imported_checkpoint(imported, tmp_path):
    data = synth_downstream.write_downstream(tmp_path / "downstream", seed=0, sizes={"mednli": (16, 4, 4)})
    argv = ["finetune", "mednli", "--init", str(imported.init), "--vocab", str(imported.vocab),
            "--data", str(data["mednli"]), "--out", str(tmp_path / "out"), "--seeds", "1",
            "--steps", "1", "--eval_every", "1", "--batch_size", "8", "--decode_batch_size", "8",
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 64, 'targets': 8}"]
    assert cli.main(argv) == 0
    run = json.loads((tmp_path / "out" / "runs" / "100pct_seed1" / "result.json").read_text())
    assert run["best_step"] == 1 and set(run["test"]) == {"accuracy", "macro_f1"}
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["test"]["100"]["accuracy"]["mean"] == run["test"]["accuracy"]


@pytest.mark.parametrize("imported", [False], ids=["folder-ids"], indirect=True)
def test_audit_accepts_the_imported_checkpoint(imported, tmp_path, capsys):
    """Folder ids only, each tokenizer kind once (minutes each): a canonical folder reaches the
    audit through the same vocabulary classes."""
    argv = ["audit", "--checkpoint", str(imported.init), "--vocab", str(imported.vocab),
            "--data", synthetic_default.prepared_dir(), "--out", str(tmp_path / "report"),
            "--notes", "8", "--inputs-length", "32", "--no-progress"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["membership"]["notes"] == {"members": 4, "nonmembers": 4}
    assert report["extraction"]
