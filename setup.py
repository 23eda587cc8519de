"""Installs clinical_t5x: the library, its SeqIO tasks (as clinical_t5x.tasks) and gin files."""
import pathlib

import setuptools

# The stack known to install together (jax 0.10.2 / TF 2.21 / seqio 0.0.20).
# tensorboard must be named: TF 2.21 no longer pulls it and clu's writers need it.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "clu==0.0.12",
    "seqio==0.0.20",
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "tensorboard==2.21.0",
    "sentencepiece==0.2.3",
    "gin-config==0.5.0",
    "numpy==2.4.6",
    "protobuf==7.36.2",
    "safetensors",
    "tqdm",
    # MinHash + LSH for `prepare --dedup near` (Rust; scipy, already here, clusters the pairs).
    "rensa==0.5.0",
    # Plots: the audit's ROC and exposure curves, finetune's data-efficiency curve.
    "matplotlib==3.11.2",
    # Builds the Hugging Face tokenizer files of every vocabulary folder (no torch needed).
    "transformers==5.24.0",
    # Runs a released model's own tokenizer.json (tokenizers-backed vocabulary folders);
    # the version transformers 5.24 installs.
    "tokenizers==0.23.3",
]

# torch runs the exported Hugging Face model (the demo's fill-in, the export tests).
# torch 2.13.0 is the CPU wheel on local disk here; an unpinned torch pulls a CUDA build.
HF_REQUIRES = ["torch==2.13.0"]
EXTRAS_REQUIRE = {"hf": HF_REQUIRES, "test": ["pytest", *HF_REQUIRES]}


def gin_data_files() -> list[tuple[str, list[str]]]:
    """The gin folder, installed under <prefix>/share/clinical_t5x/gin for non-editable installs."""
    files: dict[str, list[str]] = {}
    for path in sorted(pathlib.Path("gin").rglob("*.gin")):
        files.setdefault(str(pathlib.Path("share/clinical_t5x") / path.parent), []).append(str(path))
    return sorted(files.items())

setuptools.setup(
    name="clinical_t5x",
    version="0.1.0",
    description="Pretraining clinical T5 models on MIMIC notes with SeqIO, t5x and JAX.",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["clinical_t5x", "clinical_t5x.*"])
    + ["clinical_t5x.tasks"],
    package_dir={"clinical_t5x.tasks": "tasks"},
    package_data={"clinical_t5x": ["py.typed"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    data_files=gin_data_files(),
    entry_points={"console_scripts": ["clinical-t5x=clinical_t5x.cli:main"]},
)
