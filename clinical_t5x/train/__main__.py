"""`python -m clinical_t5x.train`: the built-in trainer's command line (t5x's flags)."""
import sys

from clinical_t5x.train import trainer

sys.exit(trainer.main())
