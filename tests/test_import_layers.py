"""The layering the package promises: the model and training code imports no TensorFlow or
seqio (GPU images and t5x tools use them without), checked in a fresh interpreter each,
since any earlier import in this one would hide a violation."""
import subprocess
import sys

import pytest

MODEL = ["network", "losses", "optim", "partitioning", "steps"]
TRAIN = ["checkpoints", "checkpoint_formats", "init_from", "preemption", "summaries", "runtime",
         "trainer"]
MODULES = ([f"clinical_t5x.model.{m}" for m in MODEL]
           + [f"clinical_t5x.train.{m}" for m in TRAIN] + ["clinical_t5x.model", "clinical_t5x.train"])
PROBE = ("import importlib, sys\n"
         "for name in sys.argv[1:]:\n"
         "    importlib.import_module(name)\n"
         "print(sorted(m for m in ('tensorflow', 'seqio') if m in sys.modules))\n")


def test_every_model_and_train_module_imports_without_tensorflow_or_seqio():
    # One interpreter per module: a heavy import in one module must not be hidden by another
    # module that happens to import it first. Batched in one process when all pass.
    out = subprocess.run([sys.executable, "-c", PROBE, *MODULES], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    if out.strip().splitlines()[-1] == "[]":
        return
    offenders = []
    for name in MODULES:
        single = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True,
                                text=True, timeout=300, check=True).stdout
        if single.strip().splitlines()[-1] != "[]":
            offenders.append(f"{name}: {single.strip().splitlines()[-1]}")
    pytest.fail("imports TensorFlow/seqio: " + "; ".join(offenders))


@pytest.mark.slow
def test_the_probe_sees_a_heavy_import():
    out = subprocess.run([sys.executable, "-c", PROBE, "clinical_t5x.tasks"], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    assert "tensorflow" in out and "seqio" in out
