"""``python -m ganfast`` runs the command-line interface (``ganfast``), e.g. under ``torchrun -m ganfast train``."""
import sys

from .cli import main

sys.exit(main())
