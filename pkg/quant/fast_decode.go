package quant

import (
	"encoding/binary"
	"math"
	"slices"
)

// decodeBlocks appends the values of whole blocks: packed holds
// len(absmax)*BlockSize/2 bytes. Per block, the 16 possible outputs are
// computed once (table[code]*absmax with flush-to-zero, rounded to the output
// type), so each value costs one lookup.
func (d *Decoder) decodeBlocks(dst, packed []byte, absmax []float32) []byte {
	need := len(packed) * 2 * d.out.Size()
	dst = slices.Grow(dst, need)
	out := dst[len(dst) : len(dst)+need]
	if !d.decodeBlocksSIMD(out, packed, absmax) {
		d.decodeBlocksGo(out, packed, absmax)
	}
	return dst[:len(dst)+need]
}

// decodeBlocksGo is decodeBlocks' portable kernel; out has room for every value.
func (d *Decoder) decodeBlocksGo(out, packed []byte, absmax []float32) {
	bs := d.p.BlockSize
	es := d.out.Size()
	for b, a := range absmax {
		p := packed[b*bs/2 : (b+1)*bs/2]
		o := out[b*bs*es : (b+1)*bs*es]
		switch d.out {
		case BF16, F16:
			var t [16]uint32
			for c := range t {
				v := mulFTZ(d.table[c], a)
				if d.out == BF16 {
					t[c] = uint32(f32ToBF16(v))
				} else {
					t[c] = uint32(f32ToF16(v))
				}
			}
			for i, v := range p {
				binary.LittleEndian.PutUint32(o[4*i:], t[v>>4]|t[v&15]<<16)
			}
		default:
			var t [16]uint64
			for c := range t {
				t[c] = uint64(math.Float32bits(mulFTZ(d.table[c], a)))
			}
			for i, v := range p {
				binary.LittleEndian.PutUint64(o[8*i:], t[v>>4]|t[v&15]<<32)
			}
		}
	}
}
