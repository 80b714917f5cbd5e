"""cf-eval: score clusters, or a kNN graph, against ground-truth identities; diagnose
(sweep), score recognition (identify), report a round, and look at clusters (gallery).
One module per subcommand; ``clusters`` is the default. A thin recipe each: read and
validate the inputs, call the core, print a table on stderr and (with --json) the
numbers on stdout."""

from __future__ import annotations

import click

from ...cli import CONTEXT_SETTINGS, CfGroup
from .clusters import clusters
from .gallery import gallery
from .identify import identify
from .knn import knn
from .report import report
from .review import review
from .sweep import sweep


class EvalGroup(CfGroup):
    default_command = "clusters"


@click.group("cf-eval", cls=EvalGroup, context_settings=CONTEXT_SETTINGS, no_args_is_help=False)
def main():
    """Score clusters, or a kNN graph, against ground-truth identities.

    \b
      cf-eval [clusters] PRED --truth TRUTH [--json] [--nmi-average A]
      cf-eval knn KNN --truth TRUTH [--json] [--ranks R1,R2,...]
      cf-eval sweep LINKS --truth TRUTH --method M [--png P]   (diagnosis: an oracle)
      cf-eval identify FEATURES [--distractors D]   (top-1 identification, TAR at FAR)
      cf-eval report WORK [--png P]   (the round's scores per round vs baseline, upper bound)
      cf-eval gallery CLUSTERS --features F -o DIR [--links L] [--truth T]   (HTML site)
      cf-eval review CLUSTERS --links LINKS -o questions.json   (what to ask a person)

    With no subcommand, 'clusters' is meant: cf-eval PRED --truth TRUTH.
    A table goes to stderr; --json writes the numbers, and only them, to stdout.
    Truth labels of -1 (unknown) are excluded from scoring and counted; predicted
    labels of -1 (unassigned) are scored as singletons and counted.
    Options go after the subcommand. See cf-eval(1) for the exact definitions.
    """


for _command in (clusters, knn, sweep, identify, gallery, report, review):
    main.add_command(_command)
