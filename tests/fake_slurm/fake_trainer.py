"""A fake trainer (`python3 -m clinical_t5x.train ... --gin.MODEL_DIR='DIR'`) for
tests/test_slurm.py: it resumes from the step in DIR/checkpoint, counts steps, and on SIGTERM
checkpoints and exits 143, as the real trainer does. Process 0 keeps the checkpoint.

Writes DIR/env-<SLURM_PROCID>-run<SLURM_RESTART_COUNT>.json (its argv and its SLURM_*, JAX_*,
CLINICAL_T5X_* variables) once it handles SIGTERM; process 0 touches DIR/progress after a step
taken when every process of the run has written that file; all append what they do to
DIR/events. FAKE_TRAINER_STEPS: steps of a full run (default 60); FAKE_TRAINER_EXIT: exit with
this status after the first step instead (a crash).
"""
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

stop = False


def on_sigterm(*_) -> None:
    global stop
    stop = True


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    model_dir = Path(next(re.fullmatch(r"--gin\.MODEL_DIR='(.*)'", a).group(1)
                          for a in argv if a.startswith("--gin.MODEL_DIR=")))
    model_dir.mkdir(parents=True, exist_ok=True)
    process = int(os.environ.get("SLURM_PROCID", "0"))
    run = os.environ.get("SLURM_RESTART_COUNT", "0")
    env = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_", "JAX_", "CLINICAL_T5X_"))}
    (model_dir / f"env-{process}-run{run}.json").write_text(json.dumps({"argv": argv, "env": env}))
    checkpoint = model_dir / "checkpoint"
    step = int(checkpoint.read_text()) if checkpoint.exists() else 0

    def event(text: str) -> None:
        with open(model_dir / "events", "a") as out:
            out.write(f"process {process} {text}\n")

    event(f"starts at step {step}")
    total = int(os.environ.get("FAKE_TRAINER_STEPS", "60"))
    while step < total:
        time.sleep(0.05)
        step += 1
        ntasks = int(os.environ.get("SLURM_NTASKS", "1"))
        if process == 0 and all((model_dir / f"env-{p}-run{run}.json").exists()
                                for p in range(ntasks)):
            (model_dir / "progress").touch()
        if os.environ.get("FAKE_TRAINER_EXIT"):
            event(f"crashes at step {step}")
            return int(os.environ["FAKE_TRAINER_EXIT"])
        if stop:
            if process == 0:
                checkpoint.write_text(str(step))
            event(f"checkpoints at step {step} and stops")
            return 143
    if process == 0:
        checkpoint.write_text(str(step))
    event(f"finishes at step {step}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
