"""`clinical-t5x audit`: how much a checkpoint leaks its training notes (canary exposure,
membership inference, extraction), as a report a data-governance reviewer can read."""
