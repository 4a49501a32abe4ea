"""`python -m kstep.cli`: the `kstep` command line."""

from kstep.cli import main

main()
