package tensorstream

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestCRCCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	buf := make([]byte, 1<<16)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	for _, cut := range []int{0, 1, 7, 8, 1000, 1 << 15, len(buf) - 1, len(buf)} {
		a, b := buf[:cut], buf[cut:]
		got := crcCombine(crc32.Checksum(a, castagnoli), crc32.Checksum(b, castagnoli), int64(len(b)))
		if want := crc32.Checksum(buf, castagnoli); got != want {
			t.Errorf("cut %d: combined %08x, want %08x", cut, got, want)
		}
	}
}

// crcCombineSquaring is crcCombine as zlib's crc32_combine computes it,
// squaring the operator anew for every call: the reference.
func crcCombineSquaring(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA ^ crcB
	}
	var even, odd [32]uint32
	odd[0] = crc32.Castagnoli
	row := uint32(1)
	for n := 1; n < 32; n++ {
		odd[n] = row
		row <<= 1
	}
	gf2Square(&even, &odd)
	gf2Square(&odd, &even)
	for {
		gf2Square(&even, &odd)
		if lenB&1 != 0 {
			crcA = gf2Times(&even, crcA)
		}
		lenB >>= 1
		if lenB == 0 {
			break
		}
		gf2Square(&odd, &even)
		if lenB&1 != 0 {
			crcA = gf2Times(&odd, crcA)
		}
		lenB >>= 1
		if lenB == 0 {
			break
		}
	}
	return crcA ^ crcB
}

func TestCRCCombineLengths(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 3))
	for _, n := range []int64{0, 1, 2, 3, 4 << 20, 4<<20 - 1, 1000, 1<<40 + 17, 1<<62 + 5, 1<<63 - 1} {
		a, b := rng.Uint32(), rng.Uint32()
		if got, want := crcCombine(a, b, n), crcCombineSquaring(a, b, n); got != want {
			t.Errorf("length %d: %08x, want %08x", n, got, want)
		}
	}
	for range 1000 {
		a, b, n := rng.Uint32(), rng.Uint32(), rng.Int64()>>rng.IntN(63)
		if got, want := crcCombine(a, b, n), crcCombineSquaring(a, b, n); got != want {
			t.Fatalf("length %d: %08x, want %08x", n, got, want)
		}
	}
}
