"""Copy task (Graves et al. 2014): the NTM against an LSTM of equal parameter count.

Sequences of 1 to 20 random 8-bit vectors are shown, then reproduced after a delimiter. Prints
the bit error per sequence while training, then on lengths 1-20 and on lengths 30-40, which
neither model was trained on.

    python benchmarks/copy_task.py                 # NTM then LSTM, at most 6 minutes each
    python benchmarks/copy_task.py --skip-lstm --max-minutes 2
"""

import argparse

from algorithmic import add_common_arguments, copy_batch, run_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--min-length", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=20)
    args = parser.parse_args()
    run_task("copy", copy_batch, args.bits + 1, args.bits, (args.min_length, args.max_length), range(30, 41), args)


if __name__ == "__main__":
    main()
