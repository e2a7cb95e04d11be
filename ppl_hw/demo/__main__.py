"""``python -m ppl_hw.demo``."""

from . import main

main()
