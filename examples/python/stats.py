#!/usr/bin/env python3
"""Read a stream with numpy: one line per raw floating-point tensor with its
shape, mean and standard deviation; 4-bit and descriptor-only tensors are
listed by their format.

    detect MODEL | python3 stats.py
"""

import sys

import numpy as np

import nf4stream


def floats(t):
    a = t.array()
    if t.dtype == "BF16":  # the high half of a float32
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def main():
    r = nf4stream.Reader(sys.stdin.buffer)
    for t in r:
        if t.nodata or t.encoding != "raw" or t.dtype not in ("F32", "F16", "BF16"):
            print("%-48s %-5s %-14s %s" % (t.name, t.dtype, t.shape, "no data" if t.nodata else t.encoding))
            continue
        x = floats(t)
        print("%-48s %-5s %-14s mean %+.4e std %.4e" % (t.name, t.dtype, t.shape, x.mean(), x.std()))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except nf4stream.StreamError as e:
        print("stats.py: %s" % e, file=sys.stderr)
        sys.exit(3)
    except BrokenPipeError:
        sys.exit(141)
