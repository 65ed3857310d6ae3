package tensorstream

import (
	"hash/crc32"
	"sync"
)

// crcCombine returns the CRC-32C of the concatenation A‖B given crcA = CRC(A),
// crcB = CRC(B) and lenB = len(B). It lets a reader and a writer checksum each
// payload byte once, for its chunk frame, and still know the payload's CRC.
// The method is zlib's crc32_combine: appending lenB zero bytes to A is a
// linear map over GF(2), the product of the maps that append 2^k zero bytes
// for the bits k set in lenB; those are built once, by repeated squaring of
// the one-zero-bit operator, so that a combine costs one matrix-vector product
// per bit set (one for the 4 MiB chunks of a stream) instead of the 40-odd
// matrix squarings that building its operator would.
func crcCombine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA ^ crcB
	}
	ops := zerosOps()
	for k := 0; lenB != 0; k, lenB = k+1, lenB>>1 {
		if lenB&1 != 0 {
			crcA = gf2Times(&ops[k], crcA)
		}
	}
	return crcA ^ crcB
}

// zerosOps returns, for each k, the operator that appends 2^k zero bytes.
var zerosOps = sync.OnceValue(func() *[63][32]uint32 {
	var bit, tmp [32]uint32
	bit[0] = crc32.Castagnoli // reversed polynomial: the operator for one zero bit
	row := uint32(1)
	for n := 1; n < 32; n++ {
		bit[n] = row
		row <<= 1
	}
	gf2Square(&tmp, &bit) // two zero bits
	gf2Square(&bit, &tmp) // four
	ops := new([63][32]uint32)
	gf2Square(&ops[0], &bit) // one zero byte
	for k := 1; k < len(ops); k++ {
		gf2Square(&ops[k], &ops[k-1])
	}
	return ops
})

func gf2Times(mat *[32]uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i, vec = i+1, vec>>1 {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
	}
	return sum
}

func gf2Square(square, mat *[32]uint32) {
	for n := range mat {
		square[n] = gf2Times(mat, mat[n])
	}
}
