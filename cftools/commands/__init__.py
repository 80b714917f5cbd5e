"""The commands: one module (or package, for those with subcommands) per cf-* command, each
a recipe: parse, validate the inputs up front, call the core, write."""
