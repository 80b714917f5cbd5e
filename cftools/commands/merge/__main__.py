"""python -m cftools.commands.merge: the same as cf-merge."""

from . import main

main(prog_name="cf-merge")
