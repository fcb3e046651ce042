"""Associative recall (Graves et al. 2014): the NTM against an LSTM of equal parameter count.

Items of three random 6-bit vectors are shown one after another; then a query item, and the
model must answer with the item that followed it. Trained on 2 to 6 items; prints the bit error
per sequence while training, then on 2-6 items and on 7-12 items, never trained on.

    python benchmarks/associative_recall.py
    python benchmarks/associative_recall.py --skip-lstm --max-minutes 3
"""

import argparse

from algorithmic import add_common_arguments, associative_recall_batch, run_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--bits", type=int, default=6)
    parser.add_argument("--min-items", type=int, default=2)
    parser.add_argument("--max-items", type=int, default=6)
    args = parser.parse_args()
    run_task(
        "associative recall",
        associative_recall_batch,
        args.bits + 2,
        args.bits,
        (args.min_items, args.max_items),
        range(args.max_items + 1, 2 * args.max_items + 1),
        args,
    )


if __name__ == "__main__":
    main()
