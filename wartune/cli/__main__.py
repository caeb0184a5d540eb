"""`python -m wartune.cli`."""

from wartune.cli import main

main()
