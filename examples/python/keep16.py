#!/usr/bin/env python3
"""A pipeline stage in Python: keep chosen tensors 16-bit.

    detect MODEL | python3 keep16.py 'model.layers.0.mlp.*' | quantize | place --out OUT

Rewrites the "quantize" annotation of every tensor whose name matches one of
the glob patterns to false (with a reason), so quantize passes it through;
everything else, payloads included, goes on byte for byte. With no pattern it
is a pass-through that only adds itself to the header's stage list.
"""

import fnmatch
import sys

import nf4stream

VERSION = "0.1.0"


def main(argv):
    pats = argv[1:]
    if any(p.startswith("-") for p in pats):
        print("keep16.py: usage: keep16.py [GLOB ...] < STREAM > STREAM", file=sys.stderr)
        return 2
    if sys.stdout.isatty():
        print("keep16.py: stdout is a terminal; pipe the stream into the next stage", file=sys.stderr)
        return 2
    r = nf4stream.Reader(sys.stdin.buffer)
    w = nf4stream.Writer(sys.stdout.buffer)
    h = r.header()
    h.add_stage("keep16.py", VERSION, pats)
    w.write_header(h)
    kept = 0
    for t in r:
        if t.get_ann("quantize", False) and any(fnmatch.fnmatchcase(t.name, p) for p in pats):
            t.set_ann("quantize", False)
            t.set_ann("reason", "kept 16-bit by keep16.py")
            kept += 1
        w.copy_tensor(t)
    w.close()
    print("keep16.py: %d tensors, %d kept 16-bit" % (r.tensors, kept), file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except nf4stream.StreamError as e:
        print("keep16.py: %s" % e, file=sys.stderr)
        sys.exit(3)
    except BrokenPipeError:
        sys.exit(141)
