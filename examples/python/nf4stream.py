"""Read and write the nf4pipe tensor stream, format 1.0 (docs/tensorstream.md).

A stage written in Python: read a stream, change what it needs, write the rest
through untouched. Needs msgpack and numpy (Debian: python3-msgpack,
python3-numpy); nothing else.

    import sys, nf4stream
    r = nf4stream.Reader(sys.stdin.buffer)
    w = nf4stream.Writer(sys.stdout.buffer)
    h = r.header()
    h.add_stage("mystage", "0.1.0", sys.argv[1:])
    w.write_header(h)
    for t in r:
        t.set_ann("reason", "seen by mystage")
        w.copy_tensor(t)        # descriptor, chunks and trailer
    w.close()

Values the program does not change travel as the msgpack bytes they came in,
so a filter that changes nothing writes the tensor records byte for byte as it
read them (header sections, annotations and quant states included).
"""

import io
import struct

import msgpack
import numpy as np

MAGIC = b"NF4S"
MAJOR, MINOR = 1, 0

# Limits a reader enforces before allocating (docs/tensorstream.md).
MAX_RECORD = 16 << 20
MAX_CHUNK = 64 << 20
WRITE_CHUNK = 4 << 20

DTYPES = {  # safetensors name -> numpy dtype (BF16 as its raw 16 bits)
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "F8_E4M3": "u1", "F8_E5M2": "u1",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "u1",
}


class StreamError(Exception):
    """A stream that is corrupt, truncated, of another version, or over a limit."""


# --- CRC-32C (Castagnoli), reflected polynomial 0x82F63B78 -------------------

def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_T = _table()
_TNP = np.array(_T, dtype=np.uint32)
_MAX_LANES = 4096
_zero_cols = {}  # n -> the images of the 32 unit registers after n zero bytes


def _update_py(state, data):
    t = _T
    for b in data:
        state = t[(state ^ b) & 0xFF] ^ (state >> 8)
    return state


# The register update is linear over GF(2): the register after a message is
# the register after its bytes from 0, XOR the starting register carried
# over as many zero bytes. So lanes can run side by side from 0 and be
# combined after, and "carry over n zero bytes" is a 32x32 bit matrix, kept
# as the images of the 32 unit registers (its columns).

def _shift(cols, states):
    """Applies the matrix with columns cols to every register in states."""
    out = np.zeros_like(states)
    one = np.uint32(1)
    for k in range(32):
        out ^= ((states >> np.uint32(k)) & one) * cols[k]
    return out


def _zeros(n):
    cols = _zero_cols.get(n)
    if cols is None:
        cols = np.array([1 << k for k in range(32)], dtype=np.uint32)
        for _ in range(n):
            cols = _TNP[cols & 0xFF] ^ (cols >> np.uint32(8))
        _zero_cols[n] = cols
    return cols


def _update(state, data):
    """The CRC register after data, from state. Large inputs run as up to
    4096 lanes in numpy, combined pairwise, so a payload costs numpy time,
    not a Python loop per byte."""
    n = len(data)
    lanes = _MAX_LANES
    while lanes > 1 and n // lanes < 256:
        lanes //= 2
    m = n // lanes
    if lanes < 64:
        return _update_py(state, data)
    cols_m = _zeros(m)
    rows = np.frombuffer(data, dtype=np.uint8, count=m * lanes).reshape(lanes, m).T.copy()
    r = np.zeros(lanes, dtype=np.uint32)
    eight, ff = np.uint32(8), np.uint32(0xFF)
    for row in rows:
        r = _TNP[(r ^ row) & ff] ^ (r >> eight)
    cols = cols_m
    while len(r) > 1:  # each level joins neighbouring lanes: shift the left one over the right one's bytes
        r = _shift(cols, r[0::2]) ^ r[1::2]
        cols = _shift(cols, cols)  # twice as many zero bytes
    state = int(_shift(cols, np.array([state], dtype=np.uint32))[0]) ^ int(r[0])
    return _update_py(state, memoryview(data)[m * lanes:])


class CRC32C:
    """Incremental CRC-32C."""

    def __init__(self):
        self._s = 0xFFFFFFFF

    def update(self, data):
        self._s = _update(self._s, data)

    def value(self):
        return self._s ^ 0xFFFFFFFF


def crc32c(data):
    c = CRC32C()
    c.update(data)
    return c.value()


# --- msgpack maps whose values stay as the bytes they came in ---------------

class RawMap:
    """A msgpack map kept as key -> encoded value, in order. get() decodes a
    value, set() encodes one; untouched values are written back unchanged."""

    def __init__(self, items=None, sort_keys=False):
        self.items = dict(items or {})
        self.sort_keys = sort_keys

    @classmethod
    def decode(cls, body, sort_keys=False):
        u = msgpack.Unpacker(io.BytesIO(body), raw=False, strict_map_key=True,
                             max_buffer_size=len(body) + 1)
        try:
            n = u.read_map_header()
            items = {}
            for _ in range(n):
                k = u.unpack()
                if not isinstance(k, str):
                    raise StreamError("map key %r is not a string" % (k,))
                start = u.tell()
                u.skip()
                items[k] = body[start:u.tell()]
        except (ValueError, msgpack.OutOfData, msgpack.ExtraData) as e:
            raise StreamError("malformed record: %s" % e) from None
        if u.tell() != len(body):
            raise StreamError("malformed record: %d bytes after the map" % (len(body) - u.tell()))
        return cls(items, sort_keys)

    def get(self, key, default=None):
        if key not in self.items:
            return default
        return msgpack.unpackb(self.items[key], raw=False)

    def set(self, key, value, single_float=False):
        self.items[key] = msgpack.packb(value, use_bin_type=True, use_single_float=single_float)

    def set_raw(self, key, encoded):
        self.items[key] = encoded

    def delete(self, key):
        self.items.pop(key, None)

    def __contains__(self, key):
        return key in self.items

    def encode(self):
        keys = sorted(self.items) if self.sort_keys else list(self.items)
        p = msgpack.Packer(use_bin_type=True)
        out = [p.pack_map_header(len(keys))]
        for k in keys:
            out.append(p.pack(k))
            out.append(self.items[k])
        return b"".join(out)


# --- records -----------------------------------------------------------------

class Header:
    """The header record: the stage list and the sections by name."""

    def __init__(self, fields):
        self.fields = fields  # RawMap

    def stages(self):
        return self.fields.get("stages", []) or []

    def add_stage(self, name, version, args=()):
        st = {"name": name, "version": version}
        if args:
            st["args"] = list(args)
        # the earlier stages keep their bytes: splice the new one after them
        raw = self.fields.items.get("stages")
        n = len(self.stages())
        p = msgpack.Packer(use_bin_type=True)
        head = p.pack_array_header(n + 1)
        old = b""
        if raw is not None:
            u = msgpack.Unpacker(io.BytesIO(raw), raw=False)
            u.read_array_header()
            old = raw[u.tell():]
        self.fields.set_raw("stages", head + old + p.pack(st))

    def section(self, name, default=None):
        secs = self.fields.items.get("sections")
        if secs is None:
            return default
        m = RawMap.decode(secs)
        return m.get(name, default)


class Tensor:
    """A tensor descriptor; its payload is read with chunks() or read()."""

    def __init__(self, fields, reader):
        self.fields = fields  # RawMap of the descriptor
        self._ann = None
        self._reader = reader
        self.trailer = None  # RawMap of the trailer, once the payload is read
        self.changed = False

    name = property(lambda self: self.fields.get("name"))
    dtype = property(lambda self: self.fields.get("dtype"))
    shape = property(lambda self: self.fields.get("shape"))
    encoding = property(lambda self: self.fields.get("encoding"))
    size = property(lambda self: self.fields.get("size"))
    nodata = property(lambda self: bool(self.fields.get("nodata", False)))
    quant = property(lambda self: self.fields.get("quant"))

    def ann(self):
        if self._ann is None:
            raw = self.fields.items.get("ann")
            self._ann = RawMap.decode(raw, sort_keys=True) if raw is not None else RawMap(sort_keys=True)
        return self._ann

    def get_ann(self, key, default=None):
        return self.ann().get(key, default)

    def set_ann(self, key, value):
        self.ann().set(key, value)
        self.fields.set_raw("ann", self._ann.encode())
        self.changed = True

    def chunks(self):
        """The payload's chunks, each checked against its frame's CRC, and the
        whole against the trailer's."""
        return self._reader._chunks(self)

    def read(self):
        return b"".join(c for c, _ in self.chunks())

    def array(self):
        """A raw payload as a numpy array of its shape (BF16 as uint16 bits)."""
        if self.encoding != "raw":
            raise ValueError("tensor %r is %s, not raw" % (self.name, self.encoding))
        return np.frombuffer(self.read(), dtype=DTYPES[self.dtype]).reshape(self.shape)


class Reader:
    """Reads a stream from a binary file object, front to back."""

    def __init__(self, f):
        self._f = f
        self._header = None
        self._pending = None  # a tensor whose payload was not read yet
        self._done = False
        self.tensors = 0
        self.bytes = 0

    def _read(self, n):
        b = self._f.read(n)
        if len(b) != n:
            raise StreamError("unexpected end of stream")
        return b

    def _frame(self):
        kind, n, crc = struct.unpack("<cII", self._read(9))
        limit = MAX_CHUNK if kind == b"C" else MAX_RECORD
        if n > limit:
            raise StreamError("%s frame of %d bytes, over the %d-byte limit" % (kind.decode(), n, limit))
        body = self._read(n)
        if crc32c(body) != crc:
            raise StreamError("checksum mismatch in a %s frame" % kind.decode())
        return kind, body, crc

    def header(self):
        if self._header is None:
            magic = self._read(8)
            if magic[:4] != MAGIC:
                raise StreamError("not an nf4pipe stream")
            if magic[4] != MAJOR:
                raise StreamError("stream format %d.%d; this reader speaks %d.x" % (magic[4], magic[5], MAJOR))
            kind, body, _ = self._frame()
            if kind != b"H":
                raise StreamError("first frame is %r, not a header" % kind)
            self._header = Header(RawMap.decode(body))
        return self._header

    def __iter__(self):
        self.header()
        while True:
            if self._pending is not None:
                for _ in self._pending.chunks():
                    pass
            kind, body, _ = self._frame()
            if kind == b"E":
                end = msgpack.unpackb(body, raw=False)
                if end.get("tensors") != self.tensors or end.get("bytes", 0) != self.bytes:
                    raise StreamError("end record counts %r, the stream had %d tensors, %d bytes" % (end, self.tensors, self.bytes))
                self._done = True
                return
            if kind != b"T":
                raise StreamError("%r frame where a tensor or the end was due" % kind)
            t = Tensor(RawMap.decode(body), self)
            self.tensors += 1
            self._pending = t
            yield t

    def _chunks(self, t):
        if self._pending is not t:
            return
        self._pending = None
        crc, got = CRC32C(), 0
        size = 0 if t.nodata else t.size
        while True:
            kind, body, fcrc = self._frame()
            if kind == b"Z":
                break
            if kind != b"C" or t.nodata:
                raise StreamError("tensor %r: %r frame inside its payload" % (t.name, kind))
            got += len(body)
            if got > size:
                raise StreamError("tensor %r: payload longer than its %d bytes" % (t.name, size))
            crc.update(body)
            yield body, fcrc
        t.trailer = RawMap.decode(body)
        if got != size or t.trailer.get("size") != got or t.trailer.get("crc32c") != crc.value():
            raise StreamError("tensor %r: payload %d of %d bytes, or checksum mismatch" % (t.name, got, size))
        self.bytes += got


class Writer:
    """Writes a stream to a binary file object."""

    def __init__(self, f):
        self._f = f
        self.tensors = 0
        self.bytes = 0
        self._crc = None
        self._size = 0

    def _frame(self, kind, body, crc=None):
        if crc is None:
            crc = crc32c(body)
        self._f.write(struct.pack("<cII", kind, len(body), crc))
        self._f.write(body)

    def write_header(self, h):
        self._f.write(MAGIC + bytes([MAJOR, MINOR, 0, 0]))
        self._frame(b"H", h.fields.encode())

    def write_tensor(self, t):
        """Writes t's descriptor; its payload follows with write() or
        write_chunk(), then end_tensor()."""
        self._frame(b"T", t.fields.encode())
        self.tensors += 1
        self._crc, self._size = CRC32C(), 0

    def write_chunk(self, data, crc=None):
        """Writes one chunk frame; crc, when known (from the reader), is
        trusted."""
        self._crc.update(data)
        self._size += len(data)
        self._frame(b"C", data, crc)

    def write(self, data):
        mv = memoryview(data)
        for i in range(0, len(mv), WRITE_CHUNK):
            self.write_chunk(bytes(mv[i:i + WRITE_CHUNK]))

    def end_tensor(self, trailer=None):
        """Writes the trailer: the one given (a payload passed through
        unchanged keeps its quant state), checked against what was written,
        or a new one."""
        if trailer is None:
            trailer = RawMap()
            trailer.set("size", self._size)
            trailer.set("crc32c", self._crc.value())
        elif trailer.get("size") != self._size or trailer.get("crc32c") != self._crc.value():
            raise StreamError("trailer does not match the payload written")
        self.bytes += self._size
        self._frame(b"Z", trailer.encode())

    def copy_tensor(self, t):
        """Writes t as it came, with its descriptor as it stands now."""
        self.write_tensor(t)
        for data, crc in t.chunks():
            self.write_chunk(data, crc)
        self.end_tensor(t.trailer)

    def close(self):
        end = RawMap()
        end.set("tensors", self.tensors)
        end.set("bytes", self.bytes)
        self._frame(b"E", end.encode())
        self._f.flush()
