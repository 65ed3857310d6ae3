//go:build amd64 && !purego

#include "textflag.h"

// AVX2 kernels for quantization and dequantization; fast_amd64.go says how
// they are driven. Every kernel works on whole blocks whose size is a multiple
// of 32 values and leaves anything unusual (non-finite values, subnormals) to
// the Go code, which patches those blocks afterwards.

// func cpuid(leaf, sub uint32) (a, b, c, d uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, a+8(FP)
	MOVL BX, b+12(FP)
	MOVL CX, c+16(FP)
	MOVL DX, d+20(FP)
	RET

// func xgetbv0() uint32
TEXT ·xgetbv0(SB), NOSPLIT, $0-4
	MOVL $0, CX
	XGETBV
	MOVL AX, ret+0(FP)
	RET

// ---------------------------------------------------------------------------
// Block statistics. For each block: the largest magnitude (sign cleared) and
// the smallest magnitude minus one (so that zero wraps to the maximum), as
// unsigned integers of the element's bits: stats[b] = max | (min-1)<<32.

// func statsU16(src *uint16, nblocks, bs int, stats *uint64)
TEXT ·statsU16(SB), NOSPLIT, $0-32
	MOVQ src+0(FP), SI
	MOVQ nblocks+8(FP), CX
	MOVQ bs+16(FP), DX
	MOVQ stats+24(FP), DI
	SHRQ $5, DX               // steps of 32 values
	VPCMPEQW Y15, Y15, Y15    // 0xFFFF: adding it subtracts one
	VPSRLW $1, Y15, Y14       // 0x7FFF: magnitude mask
	TESTQ CX, CX
	JZ   u16done

u16block:
	VPXOR   Y0, Y0, Y0        // running max
	VMOVDQU Y15, Y1           // running min of (|x|-1)
	MOVQ    DX, BX

u16step:
	VPAND   (SI), Y14, Y2
	VPAND   32(SI), Y14, Y3
	VPMAXUW Y2, Y0, Y0
	VPMAXUW Y3, Y0, Y0
	VPADDW  Y15, Y2, Y2
	VPADDW  Y15, Y3, Y3
	VPMINUW Y2, Y1, Y1
	VPMINUW Y3, Y1, Y1
	ADDQ    $64, SI
	DECQ    BX
	JNZ     u16step

	VEXTRACTI128 $1, Y0, X2
	VPMAXUW      X2, X0, X0
	VPXOR        X15, X0, X0  // max = ^min(^x)
	VPHMINPOSUW  X0, X0
	VMOVD        X0, AX
	NOTL         AX
	ANDL         $0xFFFF, AX
	VEXTRACTI128 $1, Y1, X3
	VPMINUW      X3, X1, X1
	VPHMINPOSUW  X1, X1
	VMOVD        X1, BX
	ANDQ         $0xFFFF, BX
	SHLQ         $32, BX
	ORQ          BX, AX
	MOVQ         AX, (DI)
	ADDQ         $8, DI
	DECQ         CX
	JNZ          u16block

u16done:
	VZEROUPPER
	RET

// func statsU32(src *uint32, nblocks, bs int, stats *uint64)
TEXT ·statsU32(SB), NOSPLIT, $0-32
	MOVQ src+0(FP), SI
	MOVQ nblocks+8(FP), CX
	MOVQ bs+16(FP), DX
	MOVQ stats+24(FP), DI
	SHRQ $4, DX               // steps of 16 values
	VPCMPEQD Y15, Y15, Y15
	VPSRLD $1, Y15, Y14       // 0x7FFFFFFF
	TESTQ CX, CX
	JZ   u32done

u32block:
	VPXOR   Y0, Y0, Y0
	VMOVDQU Y15, Y1
	MOVQ    DX, BX

u32step:
	VPAND   (SI), Y14, Y2
	VPAND   32(SI), Y14, Y3
	VPMAXUD Y2, Y0, Y0
	VPMAXUD Y3, Y0, Y0
	VPADDD  Y15, Y2, Y2
	VPADDD  Y15, Y3, Y3
	VPMINUD Y2, Y1, Y1
	VPMINUD Y3, Y1, Y1
	ADDQ    $64, SI
	DECQ    BX
	JNZ     u32step

	VEXTRACTI128 $1, Y0, X2
	VPMAXUD      X2, X0, X0
	VPSHUFD      $0x4E, X0, X2
	VPMAXUD      X2, X0, X0
	VPSHUFD      $0xB1, X0, X2
	VPMAXUD      X2, X0, X0
	VMOVD        X0, AX
	VEXTRACTI128 $1, Y1, X3
	VPMINUD      X3, X1, X1
	VPSHUFD      $0x4E, X1, X3
	VPMINUD      X3, X1, X1
	VPSHUFD      $0xB1, X1, X3
	VPMINUD      X3, X1, X1
	VMOVD        X1, BX
	SHLQ         $32, BX
	ORQ          BX, AX
	MOVQ         AX, (DI)
	ADDQ         $8, DI
	DECQ         CX
	JNZ          u32block

u32done:
	VZEROUPPER
	RET

// ---------------------------------------------------------------------------
// Quantization. Registers: Y0-Y3 hold 32 values (y = x*scale), Y4-Y7 their
// codes, Y8-Y11 scratch, Y12 the block's scale, Y13 the FP4 code table, R9
// the constants (quantConsts in fast_amd64.go).
//
// The decision trees of tables.go are binary searches over the ascending
// thresholds with strict >, so the code's top two bits are the number of the
// three quartile thresholds that y exceeds: three independent compares. The
// kernels then walk the remaining levels for eight values at once: r holds
// the path so far, the next threshold is table[r] (vpermps, which reads r's
// low three bits), and r = 2r + (y > threshold). NF4 counts t3, t7, t11 and
// walks two levels. FP4 counts t1, t3, t5 on |y|, adds 4 for the sign (y <=
// -2^-126: negative and not flushed to zero) and walks one level, so r ends
// as count + 8*sign, which a pshufb maps to the code.

// Constant layout (offsets into the table R9 points at), each 32 bytes:
#define K_Q1 0       // the three counted thresholds, broadcast
#define K_Q2 32
#define K_Q3 64
#define K_LVL3 128   // next-level thresholds by path
#define K_LVL4 160
#define K_ABS 192    // 0x7FFFFFFF
#define K_NEGMIN 224 // -2^-126
#define K_PERM 256   // FP4: count + 8*sign -> code, per 128-bit lane
#define K_SHUF 288   // pair bytes -> output positions (pshufb, per lane)

// Widen 32 values at SI into Y0-Y3.
#define LOAD_BF16 \
	VPMOVZXWD (SI), Y0; \
	VPMOVZXWD 16(SI), Y1; \
	VPMOVZXWD 32(SI), Y2; \
	VPMOVZXWD 48(SI), Y3; \
	VPSLLD    $16, Y0, Y0; \
	VPSLLD    $16, Y1, Y1; \
	VPSLLD    $16, Y2, Y2; \
	VPSLLD    $16, Y3, Y3; \
	ADDQ      $64, SI

#define LOAD_F16 \
	VCVTPH2PS (SI), Y0; \
	VCVTPH2PS 16(SI), Y1; \
	VCVTPH2PS 32(SI), Y2; \
	VCVTPH2PS 48(SI), Y3; \
	ADDQ      $64, SI

#define LOAD_F32 \
	VMOVUPS (SI), Y0; \
	VMOVUPS 32(SI), Y1; \
	VMOVUPS 64(SI), Y2; \
	VMOVUPS 96(SI), Y3; \
	ADDQ    $128, SI

#define SCALE \
	VMULPS Y12, Y0, Y0; \
	VMULPS Y12, Y1, Y1; \
	VMULPS Y12, Y2, Y2; \
	VMULPS Y12, Y3, Y3

// One search level: r = 2r + (y > table[r]); the compare is ordered and
// quiet (a NaN compares false, as in C).
#define LEVEL(y, r, t, tab) \
	VPERMPS tab(R9), r, t; \
	VCMPPS  $0x1E, t, y, t; \
	VPADDD  r, r, r; \
	VPSUBD  t, r, r

// The compares give -1 for true: r sums them and takes the absolute value.
#define NF4_ONE(y, r, t) \
	VCMPPS $0x1E, K_Q1(R9), y, r; \
	VCMPPS $0x1E, K_Q2(R9), y, t; \
	VPADDD t, r, r; \
	VCMPPS $0x1E, K_Q3(R9), y, t; \
	VPADDD t, r, r; \
	VPABSD r, r; \
	LEVEL(y, r, t, K_LVL3); \
	LEVEL(y, r, t, K_LVL4)

#define NF4_CODES \
	NF4_ONE(Y0, Y4, Y8); \
	NF4_ONE(Y1, Y5, Y9); \
	NF4_ONE(Y2, Y6, Y10); \
	NF4_ONE(Y3, Y7, Y11)

#define FP4_ONE(y, r, t) \
	VCMPPS $0x12, K_NEGMIN(R9), y, r; \
	VANDPS K_ABS(R9), y, y; \
	VPSLLD $2, r, r; \
	VCMPPS $0x1E, K_Q1(R9), y, t; \
	VPADDD t, r, r; \
	VCMPPS $0x1E, K_Q2(R9), y, t; \
	VPADDD t, r, r; \
	VCMPPS $0x1E, K_Q3(R9), y, t; \
	VPADDD t, r, r; \
	VPABSD r, r; \
	LEVEL(y, r, t, K_LVL3); \
	VPSHUFB r, Y13, r

#define FP4_CODES \
	FP4_ONE(Y0, Y4, Y8); \
	FP4_ONE(Y1, Y5, Y9); \
	FP4_ONE(Y2, Y6, Y10); \
	FP4_ONE(Y3, Y7, Y11)

// Pack the 32 codes in Y4-Y7 (dwords) into 16 bytes at DI, high nibble first.
#define PACK \
	VPACKSSDW Y5, Y4, Y4; \
	VPACKSSDW Y7, Y6, Y6; \
	VPACKUSWB Y6, Y4, Y4; \
	VPSLLW    $4, Y4, Y5; \
	VPSRLW    $8, Y4, Y4; \
	VPOR      Y5, Y4, Y4; \
	VPSHUFB   K_SHUF(R9), Y4, Y4; \
	VEXTRACTI128 $1, Y4, X5; \
	VPOR      X5, X4, X4; \
	VMOVDQU   X4, (DI); \
	ADDQ      $16, DI

// QUANT defines func name(dst *byte, src unsafe.Pointer, nblocks, bs int,
// scales *float32, consts *quantConsts).
#define QUANT(name, load, codes) \
TEXT name(SB), NOSPLIT, $0-48; \
	MOVQ dst+0(FP), DI; \
	MOVQ src+8(FP), SI; \
	MOVQ nblocks+16(FP), CX; \
	MOVQ bs+24(FP), DX; \
	MOVQ scales+32(FP), R8; \
	MOVQ consts+40(FP), R9; \
	SHRQ $5, DX; \
	VMOVDQU K_PERM(R9), Y13; \
	TESTQ CX, CX; \
	JZ   done; \
block: \
	VBROADCASTSS (R8), Y12; \
	ADDQ $4, R8; \
	MOVQ DX, BX; \
step: \
	load; \
	SCALE; \
	codes; \
	PACK; \
	DECQ BX; \
	JNZ  step; \
	DECQ CX; \
	JNZ  block; \
done: \
	VZEROUPPER; \
	RET

QUANT(·nf4BF16, LOAD_BF16, NF4_CODES)
QUANT(·nf4F16, LOAD_F16, NF4_CODES)
QUANT(·nf4F32, LOAD_F32, NF4_CODES)
QUANT(·fp4BF16, LOAD_BF16, FP4_CODES)
QUANT(·fp4F16, LOAD_F16, FP4_CODES)
QUANT(·fp4F32, LOAD_F32, FP4_CODES)

// ---------------------------------------------------------------------------
// Dequantization to 16-bit outputs. Per block: the 16 products book[c]*absmax
// (flush-to-zero of operands and results), rounded to the output type, split
// into a table of low bytes (Y12) and one of high bytes (Y13) for pshufb; then
// each 16 packed bytes become 32 values.
//
// Constant layout (dequantConsts in fast_amd64.go), each 32 bytes:
#define D_BOOKLO 0    // book[0..7]
#define D_BOOKHI 32   // book[8..15]
#define D_ABS 64      // 0x7FFFFFFF
#define D_MAXSUB 96   // 0x007FFFFF: magnitudes above it are normal (or more)
#define D_SIGN 128    // 0x80000000
#define D_ONE 160     // 1
#define D_HALF 192    // 0x7FFF
#define D_SPLIT 224   // pshufb: even bytes, then odd bytes, per lane
#define D_NIB 256     // 0x0F bytes

// FTZ(r, t): r = r with a subnormal flushed to a zero of its sign.
#define FTZ(r, t) \
	VPAND   D_ABS(R9), r, t; \
	VPCMPGTD D_MAXSUB(R9), t, t; \
	VPOR    D_SIGN(R9), t, t; \
	VPAND   t, r, r

// Products of the book and the block's absmax into Y2 (codes 0-7), Y3 (8-15).
#define PRODUCTS \
	VBROADCASTSS (R8), Y0; \
	ADDQ $4, R8; \
	FTZ(Y0, Y1); \
	VMULPS D_BOOKLO(R9), Y0, Y2; \
	VMULPS D_BOOKHI(R9), Y0, Y3; \
	FTZ(Y2, Y4); \
	FTZ(Y3, Y5)

// Round the float32 bits in r to bfloat16 (nearest, ties to even) in the low
// 16 bits of each dword: (b + 0x7FFF + (b>>16)&1) >> 16.
#define RNE_BF16(r, t) \
	VPSRLD $16, r, t; \
	VPAND  D_ONE(R9), t, t; \
	VPADDD D_HALF(R9), t, t; \
	VPADDD t, r, r; \
	VPSRLD $16, r, r

#define TABLE_BF16 \
	PRODUCTS; \
	RNE_BF16(Y2, Y4); \
	RNE_BF16(Y3, Y5); \
	VPACKUSDW Y3, Y2, Y2; \
	VPERMQ $0xD8, Y2, Y2

#define TABLE_F16 \
	PRODUCTS; \
	VCVTPS2PH $0, Y2, X2; \
	VCVTPS2PH $0, Y3, X3; \
	VINSERTI128 $1, X3, Y2, Y2

// Y2 holds the 16 output words in order; split into byte tables.
#define SPLIT \
	VPSHUFB D_SPLIT(R9), Y2, Y2; \
	VPERMQ  $0x88, Y2, Y12; \
	VPERMQ  $0xDD, Y2, Y13

// DEQUANT defines func name(dst *uint16, packed *byte, nblocks, bs int,
// absmax *float32, consts *dequantConsts).
#define DEQUANT(name, table) \
TEXT name(SB), NOSPLIT, $0-48; \
	MOVQ dst+0(FP), DI; \
	MOVQ packed+8(FP), SI; \
	MOVQ nblocks+16(FP), CX; \
	MOVQ bs+24(FP), DX; \
	MOVQ absmax+32(FP), R8; \
	MOVQ consts+40(FP), R9; \
	SHRQ $5, DX; \
	VMOVDQU D_NIB(R9), X15; \
	TESTQ CX, CX; \
	JZ   done; \
block: \
	table; \
	SPLIT; \
	MOVQ DX, BX; \
step: \
	VMOVDQU (SI), X6; \
	VPSRLW  $4, X6, X7; \
	VPAND   X15, X7, X7; \
	VPAND   X15, X6, X6; \
	VPUNPCKLBW X6, X7, X8; \
	VPUNPCKHBW X6, X7, X9; \
	VINSERTI128 $1, X9, Y8, Y8; \
	VPSHUFB Y8, Y12, Y6; \
	VPSHUFB Y8, Y13, Y7; \
	VPUNPCKLBW Y7, Y6, Y8; \
	VPUNPCKHBW Y7, Y6, Y9; \
	VPERM2I128 $0x20, Y9, Y8, Y6; \
	VPERM2I128 $0x31, Y9, Y8, Y7; \
	VMOVDQU Y6, (DI); \
	VMOVDQU Y7, 32(DI); \
	ADDQ $16, SI; \
	ADDQ $64, DI; \
	DECQ BX; \
	JNZ  step; \
	DECQ CX; \
	JNZ  block; \
done: \
	VZEROUPPER; \
	RET

DEQUANT(·dequantBF16, TABLE_BF16)
DEQUANT(·dequantF16, TABLE_F16)
