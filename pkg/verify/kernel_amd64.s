//go:build amd64 && !purego

#include "textflag.h"

// AVX2 comparison of a 4-bit tensor with its BF16 reference; kernel_amd64.go
// says how it is driven. One vector lane per block: eight blocks at a time.

// fastTables offsets from R8, which points 128 bytes in so that the
// constants every column uses take one-byte displacements
#define T_MIDLO -128
#define T_MIDHI -96
#define T_HWLO -64
#define T_HWHI -32
#define T_DEQLO 0
#define T_DEQHI 32
#define T_ABS 64    // 0x7FFFFFFF
#define T_EXP 96    // 0x7F800000
#define T_ONE 128   // 1
#define T_RND 160   // 0x7FFF
#define T_HI 192    // 0xFFFF0000
#define T_W7FFF 224 // 0x7FFF words

// COLUMN compares one element of eight blocks. Y9 holds, per block, the
// 32 bits of packed codes of the current eight columns; the code of this
// column is bits s..s+3 (ms = 28-s moves its bit 3 to the sign for vblendvps,
// vpermps reads the low three bits). The BF16 values of the column are the
// words of the transposed rows at uoff(SP) that unpk widens (x = bits<<16).
// Out: Y2 = x, Y3 = q = roundBF16(ftz(ftz(value[code]) * ftz(absmax))),
// where FTZ is FLUSH (or NOFLUSH when Go has found that no product can be
// subnormal),
// INSIDE (Y10) &= bits of |x - mid*m| - hw*m, with m the block's max |x|.
// Registers: Y0 index, Y1 blend mask, Y4, Y5 temporaries, Y15 zero,
// 256(SP) the blocks' flushed absmax, DX their max |x|, R8 the tables.
#define COLUMN(unpk, uoff, s, ms, FTZ) \
	VPSRLD $s, Y9, Y0; \
	VPSLLD $ms, Y9, Y1; \
	unpk uoff(SP), Y15, Y2; \
	VPERMPS T_MIDLO(R8), Y0, Y3; \
	VPERMPS T_MIDHI(R8), Y0, Y4; \
	VBLENDVPS Y1, Y4, Y3, Y3; \
	VMULPS (DX), Y3, Y3; \
	VSUBPS Y3, Y2, Y3; \
	VPAND T_ABS(R8), Y3, Y3; \
	VPERMPS T_HWLO(R8), Y0, Y4; \
	VPERMPS T_HWHI(R8), Y0, Y5; \
	VBLENDVPS Y1, Y5, Y4, Y4; \
	VMULPS (DX), Y4, Y4; \
	VSUBPS Y4, Y3, Y3; \
	VPAND Y3, Y10, Y10; \
	VPERMPS T_DEQLO(R8), Y0, Y3; \
	VPERMPS T_DEQHI(R8), Y0, Y4; \
	VBLENDVPS Y1, Y4, Y3, Y3; \
	VMULPS 256(SP), Y3, Y3; \
	FTZ; \
	VPSRLD $16, Y3, Y4; \
	VPAND T_ONE(R8), Y4, Y4; \
	VPADDD Y4, Y3, Y3; \
	VPADDD T_RND(R8), Y3, Y3; \
	VPAND T_HI(R8), Y3, Y3

// FLUSH flushes a subnormal Y3 to zero, keeping its sign.
#define FLUSH \
	VPAND T_EXP(R8), Y3, Y4; \
	VPCMPEQD Y15, Y4, Y4; \
	VPAND T_ABS(R8), Y4, Y4; \
	VPANDN Y3, Y4, Y3

#define NOFLUSH

// EVEN keeps the first column of a pair's products: Y8 = d*d, Y7 = x*q,
// Y6 = x*x; MAXD (Y11) = max(MAXD, bits of |d|).
#define EVEN \
	VSUBPS Y3, Y2, Y0; \
	VMULPS Y0, Y0, Y8; \
	VPAND T_ABS(R8), Y0, Y0; \
	VPMAXUD Y0, Y11, Y11; \
	VMULPS Y3, Y2, Y7; \
	VMULPS Y2, Y2, Y6

// ODD adds the pair to the sums as kernel.block does: sum += (p0 + p1).
// SSE Y14, XX Y13, XQ Y12.
#define ODD \
	VSUBPS Y3, Y2, Y0; \
	VMULPS Y0, Y0, Y1; \
	VADDPS Y1, Y8, Y8; \
	VADDPS Y8, Y14, Y14; \
	VPAND T_ABS(R8), Y0, Y0; \
	VPMAXUD Y0, Y11, Y11; \
	VMULPS Y3, Y2, Y1; \
	VADDPS Y1, Y7, Y7; \
	VADDPS Y7, Y12, Y12; \
	VMULPS Y2, Y2, Y1; \
	VADDPS Y1, Y6, Y6; \
	VADDPS Y6, Y13, Y13
// BLOCKMAX writes each block's largest magnitude to refMax (DX) as a
// float32: the BF16 bits with the sign cleared, shifted up (magnitudes order
// as their bits do; a NaN orders above infinity, as in the Go kernel), 64
// bytes a step. max(x) = ^min(^x) for vphminposuw, whose index word the
// shift drops. The eight blocks are contiguous.
#define BLOCKMAX \
	VMOVDQU T_W7FFF(R8), Y4; \
	VPCMPEQD Y5, Y5, Y5; \
	MOVQ SI, R9; \
	XORQ R12, R12; \
blockmax: \
	VPXOR Y0, Y0, Y0; \
	VPXOR Y1, Y1, Y1; \
	MOVQ BX, R11; \
	SHRQ $6, R11; \
blockmax_step: \
	VPAND (R9), Y4, Y2; \
	VPAND 32(R9), Y4, Y3; \
	VPMAXUW Y2, Y0, Y0; \
	VPMAXUW Y3, Y1, Y1; \
	ADDQ $64, R9; \
	DECQ R11; \
	JNZ blockmax_step; \
	VPMAXUW Y1, Y0, Y0; \
	VEXTRACTI128 $1, Y0, X1; \
	VPMAXUW X1, X0, X0; \
	VPXOR X5, X0, X0; \
	VPHMINPOSUW X0, X0; \
	VPXOR X5, X0, X0; \
	VPSLLD $16, X0, X0; \
	VMOVD X0, (DX)(R12*4); \
	INCQ R12; \
	CMPQ R12, $8; \
	JNE blockmax

// SUMS_START stores the group's absmax flushed to zero (as mulFTZ does) at
// 256(SP), empties the sums SSE (Y14), XX (Y13), XQ (Y12), MAXD (Y11) and
// INSIDE (Y10), and counts the steps of 32 columns in R11.
#define SUMS_START \
	VMOVDQU (AX), Y0; \
	VPAND T_EXP(R8), Y0, Y1; \
	VPCMPEQD Y15, Y1, Y1; \
	VPAND T_ABS(R8), Y1, Y1; \
	VPANDN Y0, Y1, Y0; \
	VMOVDQU Y0, 256(SP); \
	VPXOR Y14, Y14, Y14; \
	VPXOR Y13, Y13, Y13; \
	VPXOR Y12, Y12, Y12; \
	VPXOR Y11, Y11, Y11; \
	VPCMPEQD Y10, Y10, Y10; \
	MOVQ BX, R11; \
	SHRQ $6, R11

// CODES32 loads the codes of 32 columns: rows k and k+4 side by side, then a
// 4x4 dword transpose per 128-bit lane: D_i (8(i) columns) = dword i of rows
// 0..7, at 128+32i(SP).
#define CODES32 \
	LEAQ (DI)(CX*4), R9; \
	VMOVDQU (DI), X0; \
	VINSERTI128 $1, (R9), Y0, Y0; \
	VMOVDQU (DI)(CX*1), X1; \
	VINSERTI128 $1, (R9)(CX*1), Y1, Y1; \
	VMOVDQU (DI)(CX*2), X2; \
	VINSERTI128 $1, (R9)(CX*2), Y2, Y2; \
	VMOVDQU (DI)(R13*1), X3; \
	VINSERTI128 $1, (R9)(R13*1), Y3, Y3; \
	VPUNPCKLDQ Y1, Y0, Y4; \
	VPUNPCKHDQ Y1, Y0, Y5; \
	VPUNPCKLDQ Y3, Y2, Y6; \
	VPUNPCKHDQ Y3, Y2, Y7; \
	VPUNPCKLQDQ Y6, Y4, Y0; \
	VPUNPCKHQDQ Y6, Y4, Y1; \
	VPUNPCKLQDQ Y7, Y5, Y2; \
	VPUNPCKHQDQ Y7, Y5, Y3; \
	VMOVDQU Y0, 128(SP); \
	VMOVDQU Y1, 160(SP); \
	VMOVDQU Y2, 192(SP); \
	VMOVDQU Y3, 224(SP); \
	ADDQ $16, DI; \
	MOVQ $128, R12

// VALUES8 loads the values of eight columns: rows k and k+4 side by side,
// words then dwords interleaved: U_t (at 32t(SP)) holds columns 2t and 2t+1
// of rows 0-3 | rows 4-7. Y9 gets the codes of these columns.
#define VALUES8 \
	LEAQ (SI)(BX*4), R9; \
	VMOVDQU (SI), X0; \
	VINSERTI128 $1, (R9), Y0, Y0; \
	VMOVDQU (SI)(BX*1), X1; \
	VINSERTI128 $1, (R9)(BX*1), Y1, Y1; \
	VMOVDQU (SI)(BX*2), X2; \
	VINSERTI128 $1, (R9)(BX*2), Y2, Y2; \
	VMOVDQU (SI)(R10*1), X3; \
	VINSERTI128 $1, (R9)(R10*1), Y3, Y3; \
	VPUNPCKLWD Y1, Y0, Y4; \
	VPUNPCKHWD Y1, Y0, Y5; \
	VPUNPCKLWD Y3, Y2, Y6; \
	VPUNPCKHWD Y3, Y2, Y7; \
	VPUNPCKLDQ Y6, Y4, Y0; \
	VPUNPCKHDQ Y6, Y4, Y1; \
	VPUNPCKLDQ Y7, Y5, Y2; \
	VPUNPCKHDQ Y7, Y5, Y3; \
	VMOVDQU Y0, 0(SP); \
	VMOVDQU Y1, 32(SP); \
	VMOVDQU Y2, 64(SP); \
	VMOVDQU Y3, 96(SP); \
	ADDQ $16, SI; \
	VMOVDQU (SP)(R12*1), Y9

// COLUMNS compares the eight columns: column 2t is the high nibble of byte t,
// column 2t+1 the low one.
#define COLUMNS(FTZ) \
	COLUMN(VPUNPCKLWD, 0, 4, 24, FTZ); \
	EVEN; \
	COLUMN(VPUNPCKHWD, 0, 0, 28, FTZ); \
	ODD; \
	COLUMN(VPUNPCKLWD, 32, 12, 16, FTZ); \
	EVEN; \
	COLUMN(VPUNPCKHWD, 32, 8, 20, FTZ); \
	ODD; \
	COLUMN(VPUNPCKLWD, 64, 20, 8, FTZ); \
	EVEN; \
	COLUMN(VPUNPCKHWD, 64, 16, 12, FTZ); \
	ODD; \
	COLUMN(VPUNPCKLWD, 96, 28, 0, FTZ); \
	EVEN; \
	COLUMN(VPUNPCKHWD, 96, 24, 4, FTZ); \
	ODD

// SUMS_STORE writes the group's sums to out (kept at 288(SP)) and moves to
// the next group: the rows advanced one row; skip the other seven.
#define SUMS_STORE \
	MOVQ 288(SP), R9; \
	VMOVDQU Y14, 0(R9); \
	VMOVDQU Y13, 32(R9); \
	VMOVDQU Y12, 64(R9); \
	VMOVDQU Y11, 96(R9); \
	VMOVDQU Y10, 128(R9); \
	ADDQ $160, R9; \
	MOVQ R9, 288(SP); \
	LEAQ (SI)(R10*2), SI; \
	ADDQ BX, SI; \
	LEAQ (DI)(R13*2), DI; \
	ADDQ CX, DI; \
	ADDQ $32, AX; \
	ADDQ $32, DX

// COMPARE defines func name(src, packed *byte, bs, groups int, amax, refMax
// *float32, out *uint32, tabs *fastTables) with FTZ (FLUSH or NOFLUSH) after
// each product value*absmax: NOFLUSH where Go has found that no product can
// be subnormal. For each group of eight blocks (bs a multiple of 32): src
// holds the BF16 reference, packed the codes, amax the absmax; the kernel
// writes each block's largest magnitude to refMax, and the group's fields to
// out (blockSums).
// Frame: 0..127 the transposed values of eight columns (four vectors of two
// columns), 128..255 the transposed codes of 32 columns (four vectors of
// eight columns), 256..287 the group's absmax flushed to zero, 288 the
// output pointer. Registers: SI values, DI codes, BX the value row stride
// (2*bs bytes), CX the code row stride (bs/2), R10 and R13 three of each,
// R14 the groups left, AX absmax, DX refMax, R8 the tables.
#define COMPARE(name, FTZ) \
TEXT name(SB), NOSPLIT, $296-64; \
	MOVQ src+0(FP), SI; \
	MOVQ packed+8(FP), DI; \
	MOVQ bs+16(FP), BX; \
	MOVQ groups+24(FP), R14; \
	MOVQ amax+32(FP), AX; \
	MOVQ refMax+40(FP), DX; \
	MOVQ out+48(FP), R9; \
	MOVQ R9, 288(SP); \
	MOVQ tabs+56(FP), R8; \
	ADDQ $128, R8; \
	MOVQ BX, CX; \
	SHRQ $1, CX; \
	SHLQ $1, BX; \
	LEAQ (BX)(BX*2), R10; \
	LEAQ (CX)(CX*2), R13; \
	VPXOR Y15, Y15, Y15; \
group: \
	BLOCKMAX; \
	SUMS_START; \
cols32: \
	CODES32; \
cols8: \
	VALUES8; \
	COLUMNS(FTZ); \
	ADDQ $32, R12; \
	CMPQ R12, $256; \
	JNE cols8; \
	DECQ R11; \
	JNZ cols32; \
	SUMS_STORE; \
	DECQ R14; \
	JNZ group; \
	VZEROUPPER; \
	RET

COMPARE(·compareBF16, FLUSH)
COMPARE(·compareBF16NoFlush, NOFLUSH)
