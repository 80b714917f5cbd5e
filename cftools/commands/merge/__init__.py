"""cf-merge: links -> clusters (decode), clusters + labelled set -> next round's labels
(labels), and new points into an existing clustering (add). One module per subcommand."""

from __future__ import annotations

import click

from ...cli import CONTEXT_SETTINGS, CfGroup
from .add import add_cmd
from .decode import decode_cmd
from .labels import labels_cmd


class MergeGroup(CfGroup):
    default_command = "decode"


@click.group("cf-merge", cls=MergeGroup, context_settings=CONTEXT_SETTINGS)
def main():
    """Turn links into clusters, and clusters into the next round's training labels.

    \b
      cf-merge [decode] LINKS -o CLUSTERS.h5 --method peaks|intimacy|infomap|components
      cf-merge labels CLUSTERS --unlabelled-features FU --labelled-features FL -o OUT.h5
      cf-merge add CLUSTERS --new NEW --links LINKS --features F [--model M]
                   -o CL2.h5 --links-out LI2.h5 --features-out F2.h5

    With no subcommand, 'decode' is meant: cf-merge LINKS -o CL.h5 --method peaks.
    Options go after the subcommand. See cf-merge(1).
    """


main.add_command(decode_cmd)
main.add_command(labels_cmd)
main.add_command(add_cmd)

if __name__ == "__main__":
    main()
