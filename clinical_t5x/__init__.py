"""clinical_t5x: pretraining clinical T5 models on MIMIC notes.

Data flow: raw MIMIC CSVs -> `prepare` shards -> SeqIO span-corruption tasks -> trainer
(built-in or t5x) -> t5x-layout checkpoints -> Hugging Face export.
"""

__version__ = "0.1.0"
