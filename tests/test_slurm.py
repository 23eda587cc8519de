"""launch/slurm.sh against fake sbatch/srun/squeue/scancel/scontrol (tests/fake_slurm) that
record their calls and play a job: the sbatch script, each process's Slurm environment, the
checkpoint-requeue-resume cycle at the time limit, its bound, cancel and bad input. The real
multi-process path under Slurm's variables is tests/test_trainer.py's two-process test."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLURM_SH = ROOT / "launch" / "slurm.sh"
FAKE_SLURM = ROOT / "tests" / "fake_slurm"


def run_slurm(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
              trainer: bool = False) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Runs slurm.sh with the fake Slurm first on PATH (and with `trainer`, the fake trainer
    as python3); logs go to tmp_path/logs. Returns the result and the recorded calls."""
    log = tmp_path / "slurm.jsonl"
    path = f"{FAKE_SLURM}:{os.environ['PATH']}"
    if trainer:
        path = f"{FAKE_SLURM / 'trainer'}:{path}"
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("SLURM_", "FAKE_", "CLINICAL_T5X_", "T5X_"))
                and k != "MODEL_DIR"}
    full_env.update(PATH=path, FAKE_SLURM_LOG=str(log), FAKE_SLURM_PYTHON=sys.executable,
                    HOME=str(tmp_path / "home"), USER="alice")
    full_env.update(env or {})
    argv = ["bash", str(SLURM_SH), *args, "--log-dir", str(tmp_path / "logs")]
    result = subprocess.run(argv, env=full_env, capture_output=True, text=True, timeout=120)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def tools(calls: list[dict]) -> list[str]:
    return [c["tool"] for c in calls]


def srun_line(script: str) -> str:
    return next(line for line in script.splitlines() if line.startswith("srun "))


def test_fakes_are_executable():
    for name in ("sbatch", "srun", "squeue", "scancel", "scontrol", "trainer/python3"):
        assert os.stat(FAKE_SLURM / name).st_mode & stat.S_IXUSR, name


def test_dry_run_prints_the_sbatch_script_for_one_8_gpu_server(tmp_path):
    result, calls = run_slurm(tmp_path, "submit", "base", "--nodes", "1", "--gpus-per-node",
                              "8", "--model-dir", "runs/base", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert calls == [] and not (tmp_path / "logs").exists()  # nothing written or submitted
    script = result.stdout
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert header == [
        "#SBATCH --job-name=clinical-t5x", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@300",
        "#SBATCH --open-mode=append", f"#SBATCH --output={tmp_path}/logs/clinical-t5x-%j.log"]
    model_dir = Path.cwd() / "runs/base"  # local paths become absolute for every node
    assert srun_line(script) == (
        "srun --kill-on-bad-exit=1 python3 -m clinical_t5x.train "
        "--gin_file=gin/builtin/base.gin --gin_file=gin/partitioning/gpu-8x48g.gin "
        f"--gin.MODEL_DIR=\\'{model_dir}\\' &")
    assert f"cd {ROOT} " in script and "umask 077" in script
    assert "JAX_LOCAL_DEVICE_IDS" not in script  # one process per GPU: JAX picks SLURM_LOCALID
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_cluster_layout_options_and_t5x_engine(tmp_path):
    result, _ = run_slurm(
        tmp_path, "submit", "large", "--nodes", "4", "--gpus-per-node", "8", "--engine", "t5x",
        "--model-dir", "gs://bucket/runs/large", "--data-dir", "gs://bucket/prepared",
        "--vocab-dir", "gs://bucket/vocab", "--time", "2-00:00:00", "--partition", "gpu",
        "--account", "lab", "--cpus-per-task", "6", "--sbatch-arg=--exclusive", "--name", "ct5",
        "--max-requeues", "3", "--signal-lead", "600", "--gin", "TRAIN_STEPS=1000", "--dry-run",
        env={"T5X_ROOT": "/opt/t5x"})
    assert result.returncode == 0, result.stderr
    script = result.stdout
    for line in ("--job-name=ct5", "--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8",
                 "--cpus-per-task=6", "--time=2-00:00:00", "--partition=gpu", "--account=lab",
                 "--signal=B:USR1@600", "--exclusive"):
        assert f"#SBATCH {line}\n" in script, line
    assert "export CLINICAL_T5X_DATA_DIR=gs://bucket/prepared\n" in script
    assert "export CLINICAL_T5X_VOCAB_DIR=gs://bucket/vocab\n" in script
    assert "readonly MAX_REQUEUES=3\n" in script
    assert srun_line(script) == (
        "srun --kill-on-bad-exit=1 python3 -m t5x.train --alsologtostderr "
        "--gin_file=gin/clinical_large.gin --gin_file=gin/partitioning/gpu-4x8x80g.gin "
        "--gin.MODEL_DIR=\\'gs://bucket/runs/large\\' --gin.TRAIN_STEPS=1000 "
        "--multiprocess_gpu &")


def test_one_process_per_node_sees_all_its_gpus(tmp_path):
    result, _ = run_slurm(tmp_path, "submit", "base", "--nodes", "2", "--gpus-per-node", "4",
                          "--process-per", "node", "--model-dir", "/m", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --ntasks-per-node=1\n" in result.stdout
    assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3\n" in result.stdout
    # No gpu-2x4x*g preset: the variant's own mesh, said on stderr.
    assert "gin/partitioning/" not in srun_line(result.stdout)
    assert "no preset for 2 node(s) x 4 GPUs" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["submit", "base", "--model-dir", "/m", "--preset", "gpu-3x7g"],
     "unknown preset 'gpu-3x7g' (no gin/partitioning/gpu-3x7g.gin); one of: "),
    (["submit", "base"], "missing --model-dir DIR"),
    (["submit", "huge", "--model-dir", "/m"], "unknown variant 'huge'"),
    (["submit", "--model-dir", "/m"], "submit needs a VARIANT"),
    (["submit", "tiny", "--model-dir", "/m", "--engine", "t5x"], "the t5x engine has no tiny"),
    (["submit", "base", "--model-dir", "/m", "--engine", "pax"], "--engine must be t5x or builtin"),
    (["submit", "base", "--model-dir", "/m", "--time", "90"], "--time must be [D-]HH:MM:SS"),
    (["submit", "base", "--model-dir", "/m", "--nodes", "0"], "--nodes must be a positive"),
    (["submit", "base", "--model-dir", "/m", "--process-per", "core"], "--process-per must be"),
    (["submit", "base", "--model-dir", "/m", "--data-dir", "/no/such/prepared"],
     "no such folder: /no/such/prepared"),
    (["submit", "base", "--model-dir", "/m", "--gpus"], "unknown option --gpus"),
    (["launch"], "unknown command 'launch'"),
])
def test_bad_input_is_a_clear_error_before_any_slurm_call(tmp_path, args, message):
    result, calls = run_slurm(tmp_path, *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert calls == []


def test_submit_writes_an_owner_only_script_and_submits_it(tmp_path):
    result, calls = run_slurm(tmp_path, "submit", "scratch", "--model-dir", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4242"
    (call,) = calls
    assert call["argv"][0] == "--parsable"
    script = Path(call["argv"][1])
    assert script.parent == tmp_path / "logs" and script.suffix == ".sbatch"
    assert script.read_text() == call["script"]
    assert stat.S_IMODE(script.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(script.stat().st_mode) == 0o600
    assert "log " + str(tmp_path / "logs" / "clinical-t5x-4242.log") in result.stderr


def run_job(tmp_path: Path, *extra: str, env: dict[str, str] | None = None):
    """Submits tiny on 2 nodes x 2 GPUs to the fake cluster, which runs it here."""
    model_dir = tmp_path / "model"
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    result, calls = run_slurm(
        tmp_path, "submit", "tiny", "--nodes", "2", "--gpus-per-node", "2", "--model-dir",
        str(model_dir), "--data-dir", str(prepared), *extra, trainer=True,
        env={"FAKE_SLURM_RUN": "1", **(env or {})})
    return result, calls, model_dir


def process_env(model_dir: Path, process: int, run: int) -> dict:
    return json.loads((model_dir / f"env-{process}-run{run}.json").read_text())


def test_every_process_gets_slurms_environment(tmp_path):
    result, calls, model_dir = run_job(tmp_path, env={"FAKE_TRAINER_STEPS": "2"})
    assert result.returncode == 0, result.stderr
    assert tools(calls) == ["sbatch", "srun", "job"]
    records = [process_env(model_dir, p, 0) for p in range(4)]
    assert len({json.dumps(r["argv"]) for r in records}) == 1  # one command for all
    for p, record in enumerate(records):
        env = record["env"]
        # What jax.distributed's Slurm detection reads: coordinator = first node of the step
        # (port from the job id), process count and id, local GPU = SLURM_LOCALID.
        assert {k: env[k] for k in ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
                                    "SLURM_PROCID", "SLURM_LOCALID")} == {
            "SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "4",
            "SLURM_PROCID": str(p), "SLURM_LOCALID": str(p % 2)}
        assert env["CLINICAL_T5X_DATA_DIR"] == str(tmp_path / "prepared")
        assert "JAX_LOCAL_DEVICE_IDS" not in env
    job_log = (tmp_path / "logs" / "clinical-t5x-4242.log").read_text()
    assert "job 4242 run 1 on localhost" in job_log and "trainer exit status 0" in job_log


@pytest.mark.slow
def test_time_limit_checkpoints_requeues_and_the_next_run_resumes(tmp_path):
    result, calls, model_dir = run_job(
        tmp_path, env={"FAKE_SLURM_TIME_LIMIT_WHEN": str(tmp_path / "model" / "progress")})
    assert result.returncode == 0, result.stderr
    assert tools(calls) == ["sbatch", "srun", "scontrol", "job", "srun", "job"]
    assert calls[2]["argv"] == ["requeue", "4242"]
    assert [c["rc"] for c in calls if c["tool"] == "job"] == [0, 0]
    assert calls[1]["argv"] == calls[4]["argv"]  # the same command: it resumes from MODEL_DIR
    events = (model_dir / "events").read_text().splitlines()
    stopped = int(re.search(r"process 0 checkpoints at step (\d+)", "\n".join(events))[1])
    assert 0 < stopped < 60
    assert sorted(e for e in events if "starts" in e) == sorted(
        [f"process {p} starts at step 0" for p in range(4)]
        + [f"process {p} starts at step {stopped}" for p in range(4)])
    assert sum("finishes at step 60" in e for e in events) == 4
    assert process_env(model_dir, 0, 1)["env"]["SLURM_RESTART_COUNT"] == "1"
    job_log = (tmp_path / "logs" / "clinical-t5x-4242.log").read_text()
    assert "time limit in 300 s: checkpointing, then requeueing" in job_log
    assert "trainer exit status 143" in job_log and "job 4242 run 2" in job_log


def test_requeues_stop_at_max_requeues(tmp_path):
    result, calls, _ = run_job(
        tmp_path, "--max-requeues", "1",
        env={"FAKE_SLURM_TIME_LIMIT_WHEN": str(tmp_path / "model" / "progress"),
             "FAKE_SLURM_TIME_LIMIT_RUNS": "6"})
    assert result.returncode == 0, result.stderr
    assert [c["argv"] for c in calls if c["tool"] == "scontrol"] == [["requeue", "4242"]]
    assert [c["rc"] for c in calls if c["tool"] == "job"] == [0, 4]
    job_log = (tmp_path / "logs" / "clinical-t5x-4242.log").read_text()
    assert "not requeueing: 1 requeues done" in job_log


def test_a_crash_fails_the_job_without_requeueing(tmp_path):
    result, calls, _ = run_job(tmp_path, env={"FAKE_TRAINER_EXIT": "3"})
    assert result.returncode == 0, result.stderr  # sbatch itself succeeded
    assert "scontrol" not in tools(calls)
    assert [c["rc"] for c in calls if c["tool"] == "job"] == [3]


def test_a_job_requeued_past_the_bound_gives_up_before_training(tmp_path):
    """Slurm requeues preempted jobs by itself; the script bounds those runs too."""
    result, _ = run_slurm(tmp_path, "submit", "base", "--model-dir", "/m", "--max-requeues",
                          "2", "--dry-run")
    script = tmp_path / "job.sbatch"
    script.write_text(result.stdout)
    log = tmp_path / "calls.jsonl"
    job = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PATH": f"{FAKE_SLURM}:{os.environ['PATH']}",
             "FAKE_SLURM_LOG": str(log), "FAKE_SLURM_PYTHON": sys.executable,
             "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "localhost", "SLURM_RESTART_COUNT": "3"})
    assert job.returncode == 4
    assert "giving up after 2 requeues" in job.stderr
    assert not log.exists()  # no srun


def test_status_logs_cancel(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "ct5-11.log").write_text("old\n")
    os.utime(logs / "ct5-11.log", (1, 1))
    (logs / "ct5-12.log").write_text("a\nb\nc\n")
    result, _ = run_slurm(tmp_path, "logs", "--name", "ct5", "--lines", "2")
    assert result.returncode == 0 and result.stdout == "b\nc\n"
    result, _ = run_slurm(tmp_path, "logs", "--name", "ct5", "--job", "11")
    assert result.stdout == "old\n"
    result, _ = run_slurm(tmp_path, "logs", "--name", "other")
    assert result.returncode == 1 and "no job log" in result.stderr
    for args in (["status", "--name", "ct5"], ["cancel", "--name", "ct5"],
                 ["cancel", "--job", "12"]):
        result, _ = run_slurm(tmp_path, *args)
        assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in (tmp_path / "slurm.jsonl").read_text().splitlines()]
    assert [(c["tool"], c["argv"][:2]) for c in calls] == [
        ("squeue", ["--name=ct5", "--user=alice"]),
        ("scancel", ["--name=ct5", "--user=alice"]),
        ("scancel", ["12"])]
