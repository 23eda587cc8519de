"""SeqIO task and mixture registration (importable as `clinical_t5x.tasks`)."""
