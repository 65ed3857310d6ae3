package quant

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// Decoder dequantizes the packed codes of one tensor, streamed in chunks of
// any length, given its float32 absmax values (see AbsmaxFrom). Values are
// table[code] * absmax in float32 with flush-to-zero, as bitsandbytes' kernel
// computes them, then rounded to the output type to nearest, ties to even.
type Decoder struct {
	p      Params
	n      int64
	absmax []float32
	out    DType
	table  [16]float32
	pos    int64 // elements decoded

	consts *dequantConsts // the vector kernels' tables, built on first use
}

// NewDecoder prepares to decode n values into out (F32, F16 or BF16).
func NewDecoder(p Params, n int64, absmax []float32, out DType) (*Decoder, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if !Supported(out) {
		return nil, fmt.Errorf("%w: %q", ErrDType, out)
	}
	if want := SizesFor(n, p).Blocks; int64(len(absmax)) != want {
		return nil, fmt.Errorf("%w: %d absmax values for %d elements in blocks of %d, want %d",
			ErrLength, len(absmax), n, p.BlockSize, want)
	}
	info, err := p.Type.Info()
	if err != nil {
		return nil, err
	}
	return &Decoder{p: p, n: n, absmax: absmax, out: out, table: info.Dequant}, nil
}

// Decode appends to dst the values of the packed bytes, which continue where
// the previous call stopped. The pad nibble of an odd count is skipped.
func (d *Decoder) Decode(dst, packed []byte) ([]byte, error) {
	if (d.pos+1)/2+int64(len(packed)) > (d.n+1)/2 {
		return dst, fmt.Errorf("%w: more than %d packed bytes", ErrLength, (d.n+1)/2)
	}
	bs := int64(d.p.BlockSize)
	for len(packed) > 0 {
		if d.pos%bs == 0 { // whole blocks go to the block kernels
			if nb := min(int64(len(packed))*2, d.n-d.pos) / bs; nb > 0 {
				dst = d.decodeBlocks(dst, packed[:nb*bs/2], d.absmax[d.pos/bs:d.pos/bs+nb])
				packed = packed[nb*bs/2:]
				d.pos += nb * bs
				continue
			}
		}
		b := packed[0]
		packed = packed[1:]
		for k := 0; k < 2 && d.pos < d.n; k++ {
			c := b >> 4
			if k == 1 {
				c = b & 15
			}
			v := mulFTZ(d.table[c], d.absmax[d.pos/bs])
			switch d.out {
			case BF16:
				dst = binary.LittleEndian.AppendUint16(dst, f32ToBF16(v))
			case F16:
				dst = binary.LittleEndian.AppendUint16(dst, f32ToF16(v))
			default:
				dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
			}
			d.pos++
		}
	}
	return dst, nil
}

// AbsmaxFrom recovers the float32 absmax values from a payload's absmax section
// and, with double quantization, its nested section and offset.
func AbsmaxFrom(p Params, n int64, absmaxSec, nestedSec []byte, offset float32) ([]float32, error) {
	s := SizesFor(n, p)
	if int64(len(absmaxSec)) != s.Absmax || int64(len(nestedSec)) != s.Nested {
		return nil, fmt.Errorf("%w: absmax/nested sections of %d/%d bytes, want %d/%d",
			ErrLength, len(absmaxSec), len(nestedSec), s.Absmax, s.Nested)
	}
	out := make([]float32, s.Blocks)
	if !p.DoubleQuant {
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(absmaxSec[4*i:]))
		}
		return out, nil
	}
	nested := make([]float32, s.NestedBlocks())
	for i := range nested {
		nested[i] = math.Float32frombits(binary.LittleEndian.Uint32(nestedSec[4*i:]))
	}
	NestDequantize(out, absmaxSec, nested, offset)
	return out, nil
}

// Quantized is a whole quantized tensor in memory, for tests, tools and
// backends that cross-check; streaming code uses Encoder.
type Quantized struct {
	Params       Params
	N            int64
	Packed       []byte
	Absmax       []byte // the payload's absmax section: U8 codes or F32 values
	Nested       []byte // the nested section (double quantization only)
	NestedOffset float32
}

// Quantize quantizes n = len(src)/dt.Size() values held in memory.
func Quantize(src []byte, dt DType, p Params, backend Backend) (*Quantized, error) {
	if !Supported(dt) {
		return nil, fmt.Errorf("%w: %q", ErrDType, dt)
	}
	n := int64(len(src) / dt.Size())
	var buf bytes.Buffer
	enc, err := NewEncoder(&buf, dt, n, p, backend)
	if err != nil {
		return nil, err
	}
	if _, err := enc.Write(src); err != nil {
		return nil, err
	}
	res, err := enc.Close()
	if err != nil {
		return nil, err
	}
	b := buf.Bytes()
	s := res.Sizes
	return &Quantized{Params: p, N: n, Packed: b[:s.Packed], Absmax: b[s.Packed : s.Packed+s.Absmax],
		Nested: b[s.Packed+s.Absmax:], NestedOffset: res.NestedOffset}, nil
}

// Dequantize returns the values of q in the out type.
func (q *Quantized) Dequantize(out DType) ([]byte, error) {
	absmax, err := AbsmaxFrom(q.Params, q.N, q.Absmax, q.Nested, q.NestedOffset)
	if err != nil {
		return nil, err
	}
	d, err := NewDecoder(q.Params, q.N, absmax, out)
	if err != nil {
		return nil, err
	}
	return d.Decode(make([]byte, 0, q.N*int64(out.Size())), q.Packed)
}
