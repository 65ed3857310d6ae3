//go:build amd64 && !purego

package verify

import (
	"math"
	"sync"

	"golang.org/x/sys/cpu"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// The AVX2 kernel (kernel_amd64.s) compares eight blocks at a time, one block
// per vector lane: it transposes eight rows of BF16 values and packed codes so
// that each step takes the same element of eight blocks, and so computes for
// each block exactly the float32 operations of kernel.block in the same
// order. Its results are therefore bit for bit those of the Go kernel
// (TestFastMatchesPlain), which still takes a chunk's last blocks (fewer than
// eight, or a tensor's short last block) and any block whose reference holds a
// NaN or an infinity.

// compareBF16 flushes subnormal products value*absmax to zero as mulFTZ
// does; compareBF16NoFlush is the same kernel without the flush, for chunks
// whose absmax values make every product normal. Both are one macro of
// kernel_amd64.s.
//
//go:noescape
func compareBF16(src, packed *byte, bs, groups int, amax, refMax *float32, out *uint32, tabs *fastTables)

//go:noescape
func compareBF16NoFlush(src, packed *byte, bs, groups int, amax, refMax *float32, out *uint32, tabs *fastTables)

// fastTables are the kernel's constants: the code book's cells and values
// (flushed to zero as mulFTZ does), each split into the two halves vpermps
// indexes, and integer masks; the order is the kernel's (T_* offsets).
type fastTables struct {
	mid, hw, deq           [16]float32
	abs, exp, one, rnd, hi [8]uint32
	w7fff                  [16]uint16
	// noFlush is the smallest absmax whose products with every nonzero
	// code book value are normal (or a zero absmax): then mulFTZ needs no
	// flush.
	noFlush float32
}

var useAVX2 = cpu.X86.HasAVX2

var fastTablesFor = sync.OnceValue(func() map[*codebook]*fastTables {
	m := map[*codebook]*fastTables{}
	for _, cb := range codebooks() {
		t := &fastTables{}
		for c := range 16 {
			t.deq[c], t.mid[c], t.hw[c] = ftz(cb.deq[c]), cb.mid[c], cb.hw[c]
		}
		for i := range 8 {
			t.exp[i], t.abs[i], t.one[i], t.rnd[i], t.hi[i] = 0x7f800000, 0x7fffffff, 1, 0x7fff, 0xffff0000
		}
		for i := range t.w7fff {
			t.w7fff[i] = 0x7fff
		}
		small := 1.0
		for _, v := range cb.deq {
			if v != 0 {
				small = min(small, math.Abs(float64(v)))
			}
		}
		// a little above 2^-126 / small: float32 rounding of the product
		// is monotone, so |absmax| >= noFlush gives |product| >= 2^-126
		t.noFlush = float32(0x1p-126 / small * (1 + 1e-6))
		m[cb] = t
	}
	return m
})

// useFast reports whether the vector kernel compares a reference of dtype ref
// with a tensor that dequantizes to deq in blocks of blockSize.
func useFast(ref, deq tensorstream.DType, blockSize int) bool {
	return useAVX2 && ref == tensorstream.BF16 && deq == tensorstream.BF16 && blockSize%32 == 0
}

// fastBF16 compares the chunk's first full blocks, in groups of eight, from
// the reference's BF16 bytes raw; it returns how many blocks it did.
func (k *kernel) fastBF16(s *blockSums, raw, packed []byte, amax []float32, full int) int {
	const sign = 1 << 31
	bs := k.bs
	groups := full / 8
	if groups == 0 {
		return 0
	}
	nb := groups * 8
	tabs := fastTablesFor()[k.cb]
	flush := false
	for _, a := range amax[:nb] {
		if a != 0 && math.Abs(float64(a)) < float64(tabs.noFlush) {
			flush = true
			break
		}
	}
	if flush {
		compareBF16(&raw[0], &packed[0], bs, groups, &amax[0], &s.refMax[0], &s.v[0], tabs)
	} else {
		compareBF16NoFlush(&raw[0], &packed[0], bs, groups, &amax[0], &s.refMax[0], &s.v[0], tabs)
	}
	var x []float32
	for b := range nb {
		m := s.refMax[b]
		switch {
		case math.Float32bits(m) >= 0x7f800000, amax[b] != amax[b]:
			// A reference holding a NaN or an infinity, or a NaN absmax,
			// whose NaN products the kernel's integer BF16 rounding can
			// carry into the sign and exponent (0xffffffff rounds to 0,
			// found by FuzzFastMatchesPlain): the Go kernel's way.
			x = grow(x, bs)
			widen(x, raw[b*bs*2:], tensorstream.BF16)
			k.block(s, b, x, packed[b*bs/2:], amax[b])
		case m == 0: // the Go kernel's cells are infinite: every value is inside
			*s.at(b, fInside) |= sign
		}
	}
	return nb
}
