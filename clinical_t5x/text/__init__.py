"""Stage 2, text to ids: vocabulary folders (SentencePiece pieces, sentinels, DEID tags), the
matching Hugging Face tokenizer files, and the span-corruption preprocessor the tasks use."""
