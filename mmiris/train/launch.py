"""Entry point for torchrun: ``mmiris train`` with torchrun's error recording.

    torchrun --standalone --nproc_per_node 2 -m mmiris.train.launch [--store S] --split split --model mf
    torchrun --nnodes 2 --node_rank R --nproc_per_node 1 --rdzv_backend c10d \\
        --rdzv_endpoint HOST:PORT --rdzv_id run1 -m mmiris.train.launch --split split --model mf

Arguments are those of ``mmiris train``; ``--store``/``-v`` may appear anywhere. ``@record``
makes torchrun print the failing rank's exception as the root cause of a failed group.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import record

from mmiris import cli


@record
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    glob, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--store" and i + 1 < len(argv):
            glob += argv[i:i + 2]
            i += 2
            continue
        if a.startswith("--store=") or a in ("-v", "--verbose"):
            glob.append(a)
        else:
            rest.append(a)
        i += 1
    return cli.main([*glob, "train", *rest])


if __name__ == "__main__":
    sys.exit(main())
