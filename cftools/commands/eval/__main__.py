"""python -m cftools.commands.eval: the same as cf-eval."""

from . import main

main(prog_name="cf-eval")
