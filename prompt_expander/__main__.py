"""Entry point for `python -m prompt_expander`."""
import sys

from .cli import main

sys.exit(main())
