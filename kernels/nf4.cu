// nf4.cu: bitsandbytes-exact 4-bit (NF4/FP4) blockwise quantization, double
// quantization of the absmax values, and dequantization.
//
// Every kernel here must produce, bit for bit, what pkg/quant computes on the
// CPU, which is what bitsandbytes' CUDA kernels produce. bitsandbytes is built
// with --use_fast_math, so its scale 1/absmax is rcp.approx.ftz.f32, its
// products flush subnormals (mul.ftz) and its fmaxf flushes too (max.ftz).
// Those exact instructions are written as inline PTX below, so neither nvcc's
// flags nor contraction into FMA can change a bit.
//
// The PTX built from this file for compute_75 is committed (nf4.ptx) and
// embedded in internal/gpu; scripts/build-ptx.sh regenerates it.
//
// Kernels (all persistent: any grid size works; launch about 4 waves):
//   quant_g16_<dt>_<qt>_b64_v4       full tiles of 1024 16-bit values, block size 64
//   quant_tile_<dt>_<qt>_b<bs>_v<V>  full tiles of 256*V values, block sizes 32..256
//   quant_warp_<dt>_<qt>             one warp per block, any block size, short last block
//   mean_torch                       the double-quantization offset, in torch's order
//   nest_quantize                    double quantization of the absmax values
//   dequant_b64_bf16_v8              bf16 values at block size 64 from codes and (nested) absmax
//   dequant_<dt>_v<V>                values of dt, any block size, from codes and (nested) absmax

#include <stdint.h>

typedef unsigned long long u64;

#define FLT_MAX_ 3.402823466e+38f

// ---------------------------------------------------------------------------
// Fast-math arithmetic, spelled out.
// ---------------------------------------------------------------------------

__device__ __forceinline__ float rcp_ftz(float a) {
    float r;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(a));
    return r;
}
__device__ __forceinline__ float mul_ftz(float a, float b) {
    float r;
    asm("mul.rn.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float max_ftz(float a, float b) {
    float r;
    asm("max.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float add_rn(float a, float b) {
    float r;
    asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float sub_rn(float a, float b) {
    float r;
    asm("sub.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float mul_rn(float a, float b) {
    float r;
    asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ bool nonfinite(float f) { return !(fabsf(f) <= FLT_MAX_); }

// ---------------------------------------------------------------------------
// Code decision by bucket table (scripts/gen-code-tables.go).
//
// bitsandbytes picks a 4-bit code with a tree of strict float32 comparisons.
// The same result is the number of thresholds below y (NF4), or that rank
// mapped to its FP4 code. The clamped value t is cut into buckets of width
// 1/16, narrower than the closest pair of thresholds, so a bucket holds at most
// one; entry b holds that threshold (2.0 if none) and the count below the
// bucket, and one comparison finishes: code = below[b] + (t > thr[b]). The
// bucket index only selects the comparison; every threshold lies at least
// 0.004 from a bucket edge, far beyond the rounding of the index arithmetic.
// NF4: t = max(y, -1), b = round(16t + 16); FP4: t = max(|y|, 0), b = round(16t).
// |y| <= 1 + 2 ulp, and a NaN y becomes -1 or 0 there and gets code 0, as in the tree.
// ---------------------------------------------------------------------------

enum { QT_NF4 = 0, QT_FP4 = 1 };
enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2 };

__constant__ uint2 nf4_tab[33] = {
    {0x40000000u, 0u}, {0x40000000u, 0u}, {0xbf591cd9u, 0u}, {0x40000000u, 1u},
    {0x40000000u, 1u}, {0x40000000u, 1u}, {0xbf1c5270u, 1u}, {0x40000000u, 2u},
    {0x40000000u, 2u}, {0xbeeb8480u, 2u}, {0x40000000u, 3u}, {0xbeadea76u, 3u},
    {0xbe703cecu, 4u}, {0x40000000u, 5u}, {0xbe0d38bcu, 5u}, {0xbd3a7871u, 6u},
    {0x40000000u, 7u}, {0x3d22faffu, 7u}, {0x3df64863u, 8u}, {0x3e5067e0u, 9u},
    {0x40000000u, 10u}, {0x3e9582d4u, 10u}, {0x3ec753f9u, 11u}, {0x40000000u, 12u},
    {0x3f006d03u, 12u}, {0x40000000u, 13u}, {0x3f248dafu, 13u}, {0x40000000u, 14u},
    {0x40000000u, 14u}, {0x40000000u, 14u}, {0x3f5c89d9u, 14u}, {0x40000000u, 15u},
    {0x40000000u, 15u},
};
__constant__ uint2 fp4_tab[17] = {
    {0x3b2aaab9u, 0u}, {0x3db00000u, 1u}, {0x40000000u, 2u}, {0x3e555555u, 2u},
    {0x40000000u, 3u}, {0x3e955555u, 3u}, {0x40000000u, 4u}, {0x3ed55556u, 4u},
    {0x40000000u, 5u}, {0x3f155550u, 5u}, {0x40000000u, 6u}, {0x40000000u, 6u},
    {0x40000000u, 6u}, {0x3f555555u, 6u}, {0x40000000u, 7u}, {0x40000000u, 7u},
    {0x40000000u, 7u},
};
// FP4 code of each rank (0..7) of |y|, one nibble each, rank 0 lowest.
#define FP4_RANK_CODES 0x32547610u

// Code books for dequantization; FP4 code 8 is -0, as the kernel negates 0.
__constant__ float nf4_map[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
__constant__ float fp4_map[16] = {
    0.0f, 0.005208333333f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f,
    -0.0f, -0.005208333333f, -0.66666667f, -1.0f, -0.33333333f, -0.5f, -0.16666667f, -0.25f};

// Bit position of code k (0..7) in a little-endian word of packed codes:
// byte j = code[2j] << 4 | code[2j+1].
#define CODE_SHIFT(k) (8 * ((k) >> 1) + (((k) & 1) ? 0 : 4))

// TabSet is the bucket table in shared memory. For NF4 it holds 8 copies, copy
// k with the count already shifted to code k's place in the packed word, so
// that a code costs no shift. Entries are addressed straight from the float
// bits the bucket arithmetic leaves: fma(t, 2^-18, 2 + 16 ulp) has the bits
// 0x40000000 + round(16t + 16), and 8 times that wraps to 8 * bucket.
#define TAB_COPIES 8
template <int QT>
__device__ __forceinline__ void load_tab(uint2 (*s)[33]) {
    const int nb = QT == QT_NF4 ? 33 : 17;
    const int copies = QT == QT_NF4 ? TAB_COPIES : 1;
    for (int i = threadIdx.x; i < nb * copies; i += blockDim.x) {
        const int k = i / nb, b = i % nb;
        uint2 e = QT == QT_NF4 ? nf4_tab[b] : fp4_tab[b];
        e.y <<= QT == QT_NF4 ? CODE_SHIFT(k) : 0;
        s[k][b] = e;
    }
    __syncthreads();
}

struct Tab {
    uint32_t base;  // shared address of copy 0
    __device__ __forceinline__ explicit Tab(const uint2 (*t)[33]) : base((uint32_t)__cvta_generic_to_shared(t)) {}
    template <int K>
    __device__ __forceinline__ uint2 at(float bucket) const {
        uint2 e;
        asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];"
                     : "=r"(e.x), "=r"(e.y)
                     : "r"(__float_as_uint(bucket) * 8u + base + K * 33 * 8));
        return e;
    }
};

// code4 returns the 4-bit code of y = x * scale, shifted to place K of a
// packed word. With finite false, y may be NaN or outside [-1-2ulp, 1+2ulp]
// (a block with a non-finite value or an absmax of 0): it is clamped first.
template <int QT, bool finite, int K>
__device__ __forceinline__ uint32_t code4(const Tab &tab, float y) {
    if (QT == QT_NF4) {
        const float t = finite ? y : fmaxf(y, -1.0f);
        const uint2 e = tab.at<K>(__fmaf_rn(t, 0x1p-18f, 2.0f + 16 * 0x1p-22f));
        return t > __uint_as_float(e.x) ? e.y + (1u << CODE_SHIFT(K)) : e.y;
    } else {
        const float t = finite ? fabsf(y) : fmaxf(fabsf(y), 0.0f);
        const uint2 e = tab.at<0>(__fmaf_rn(t, 0x1p-18f, 2.0f));
        const uint32_t rank = t > __uint_as_float(e.x) ? e.y + 1 : e.y;
        const uint32_t c = (FP4_RANK_CODES >> (rank * 4)) & 7u;
        return (y < 0.0f ? c | 8u : c) << CODE_SHIFT(K);
    }
}

// ---------------------------------------------------------------------------
// Element loads: groups of 8 consecutive elements at an index divisible by 8.
// ---------------------------------------------------------------------------

template <int DT> struct Raw { uint4 q; };
template <> struct Raw<DT_F32> { float4 a, b; };

template <int DT>
__device__ __forceinline__ Raw<DT> load_raw(const void *base, u64 i) {
    Raw<DT> r;
    if constexpr (DT == DT_F32) {
        const float4 *p = reinterpret_cast<const float4 *>(static_cast<const float *>(base) + i);
        r.a = __ldcs(p);
        r.b = __ldcs(p + 1);
    } else {
        r.q = __ldcs(reinterpret_cast<const uint4 *>(static_cast<const unsigned short *>(base) + i));
    }
    return r;
}

__device__ __forceinline__ float f16_to_f32(uint32_t h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"((unsigned short)h));
    return f;
}

template <int DT>
__device__ __forceinline__ void widen(const Raw<DT> &r, float v[8]) {
    if constexpr (DT == DT_F32) {
        v[0] = r.a.x; v[1] = r.a.y; v[2] = r.a.z; v[3] = r.a.w;
        v[4] = r.b.x; v[5] = r.b.y; v[6] = r.b.z; v[7] = r.b.w;
    } else {
        const uint32_t w[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            if (DT == DT_BF16) {
                v[2 * k] = __uint_as_float(w[k] << 16);
                v[2 * k + 1] = __uint_as_float(w[k] & 0xFFFF0000u);
            } else {
                v[2 * k] = f16_to_f32(w[k] & 0xFFFFu);
                v[2 * k + 1] = f16_to_f32(w[k] >> 16);
            }
        }
    }
}

template <int DT>
__device__ __forceinline__ float load1(const void *base, u64 i) {
    if (DT == DT_F32) return static_cast<const float *>(base)[i];
    uint32_t h = static_cast<const unsigned short *>(base)[i];
    if (DT == DT_BF16) return __uint_as_float(h << 16);
    return f16_to_f32(h);
}

// load8_upto loads the group at i, with zeros for elements at end or later.
template <int DT>
__device__ __forceinline__ void load8_upto(const void *base, u64 i, u64 end, float v[8]) {
    if (i + 8 <= end) {
        widen<DT>(load_raw<DT>(base, i), v);
        return;
    }
#pragma unroll
    for (int k = 0; k < 8; k++) v[k] = i + k < end ? load1<DT>(base, i + k) : 0.0f;
}

// codes8 quantizes 8 values with scale s into a little-endian word of packed
// codes: byte k = code[2k] << 4 | code[2k+1].
template <int QT, bool finite>
__device__ __forceinline__ uint32_t codes8(const Tab &tab, const float v[8], float s) {
    return code4<QT, finite, 0>(tab, mul_ftz(v[0], s)) + code4<QT, finite, 1>(tab, mul_ftz(v[1], s)) +
           code4<QT, finite, 2>(tab, mul_ftz(v[2], s)) + code4<QT, finite, 3>(tab, mul_ftz(v[3], s)) +
           code4<QT, finite, 4>(tab, mul_ftz(v[4], s)) + code4<QT, finite, 5>(tab, mul_ftz(v[5], s)) +
           code4<QT, finite, 6>(tab, mul_ftz(v[6], s)) + code4<QT, finite, 7>(tab, mul_ftz(v[7], s));
}

// ---------------------------------------------------------------------------
// quant_tile: whole tiles of 256*V values, block size B = 8*G for G = 2..32
// lanes. Vector v of lane l is the group of 8 values at 256*v + 8*l in the
// tile, so each load and store of a warp is contiguous; a block's G lanes
// combine their maxima with G-1 xor shuffles. All V loads are issued before
// any is used. At block size 64 with 4 vectors (the default for 16-bit
// input) a tile's 16 absmax values are gathered into lanes 0-3 by shuffles and
// stored 64 bytes at once: 4-byte stores from every eighth lane held the
// kernel's bytes to 89% of copy bandwidth, whole 64-byte stores to 99% (probe,
// H200). The block maximum starts at -FLT_MAX and uses max.ftz, which
// ignores NaN, as bitsandbytes does. A block with a non-finite value sets *bad
// (the host then finds it on the CPU); the codes are still bitsandbytes'.
// ---------------------------------------------------------------------------

template <int DT, int QT, int LOG2G, int V, bool GATHER = (LOG2G == 3 && V == 4)>
__device__ __forceinline__ void quant_tile(const void *__restrict__ x, u64 ntiles, uint8_t *__restrict__ packed,
                                           float *__restrict__ absmax, int *__restrict__ bad) {
    static_assert(!GATHER || (LOG2G == 3 && V == 4), "GATHER: block 64, 4 vectors");
    __shared__ uint2 tab_s[TAB_COPIES][33];
    load_tab<QT>(tab_s);
    const Tab tab(tab_s);
    constexpr int G = 1 << LOG2G;
    const int lane = threadIdx.x & 31;
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    bool nf = false;
    for (u64 tile = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; tile < ntiles; tile += nwarps) {
        const u64 e0 = tile * (256 * V) + 8 * lane;
        Raw<DT> r[V];
        float mv[V];
#pragma unroll
        for (int v = 0; v < V; v++) r[v] = load_raw<DT>(x, e0 + 256 * v);
#pragma unroll
        for (int v = 0; v < V; v++) {
            float f[8];
            widen<DT>(r[v], f);
            float m = -FLT_MAX_, sum = 0.0f;
#pragma unroll
            for (int k = 0; k < 8; k++) {
                m = max_ftz(m, fabsf(f[k]));
                sum += f[k];
            }
#pragma unroll
            for (int o = 1; o < G; o <<= 1) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, o));
            const float s = rcp_ftz(m);
            uint32_t w;
            // Finite values and a normal absmax keep y in [-1-2ulp, 1+2ulp].
            if (sum - sum == 0.0f && m > 0.0f) {
                w = codes8<QT, true>(tab, f, s);
            } else {
                w = codes8<QT, false>(tab, f, s);
#pragma unroll
                for (int k = 0; k < 8; k++) nf |= nonfinite(f[k]);
            }
            const u64 e = e0 + 256 * v;
            __stcs(reinterpret_cast<uint32_t *>(packed) + (e >> 3), w);
            if (GATHER) mv[v] = m;
            else if ((lane & (G - 1)) == 0) absmax[e >> (LOG2G + 3)] = m;
        }
        if (GATHER) {
            // The tile's 16 block maxima (vector v, group j in lanes 8j..8j+7)
            // go to lanes 0-3 (lane v takes vector v's four) and out as one
            // 64-byte store.
            float g[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int v = 0; v < V; v++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const float t = __shfl_sync(0xFFFFFFFFu, mv[v], 8 * j);
                    if (lane == v) g[j] = t;
                }
            if (lane < 4) reinterpret_cast<float4 *>(absmax + tile * 16)[lane] = make_float4(g[0], g[1], g[2], g[3]);
        }
    }
    if (nf) *bad = 1;
}

#define QUANT_TILE(dt, qt, DT, QT, bs, LOG2G, V)                                                   \
    extern "C" __global__ void __launch_bounds__(256) quant_tile_##dt##_##qt##_b##bs##_v##V(       \
        const void *__restrict__ x, u64 ntiles, uint8_t *__restrict__ packed,                     \
        float *__restrict__ absmax, int *__restrict__ bad) {                                      \
        quant_tile<DT, QT, LOG2G, V>(x, ntiles, packed, absmax, bad);                             \
    }
#define QUANT_TILES(dt, qt, DT, QT, V)       \
    QUANT_TILE(dt, qt, DT, QT, 32, 2, V)     \
    QUANT_TILE(dt, qt, DT, QT, 64, 3, V)     \
    QUANT_TILE(dt, qt, DT, QT, 128, 4, V)    \
    QUANT_TILE(dt, qt, DT, QT, 256, 5, V)
QUANT_TILES(bf16, nf4, DT_BF16, QT_NF4, 4)
QUANT_TILES(bf16, fp4, DT_BF16, QT_FP4, 4)
QUANT_TILES(f16, nf4, DT_F16, QT_NF4, 4)
QUANT_TILES(f16, fp4, DT_F16, QT_FP4, 4)
QUANT_TILES(f32, nf4, DT_F32, QT_NF4, 2)
QUANT_TILES(f32, fp4, DT_F32, QT_FP4, 2)
// For the benchmark: the default case with one 4-byte absmax store per block.
extern "C" __global__ void __launch_bounds__(256) quant_tile_bf16_nf4_b64_v4_plain(
    const void *__restrict__ x, u64 ntiles, uint8_t *__restrict__ packed, float *__restrict__ absmax,
    int *__restrict__ bad) {
    quant_tile<DT_BF16, QT_NF4, 3, 4, false>(x, ntiles, packed, absmax, bad);
}
// Other vector counts of the default case, for the benchmark.
QUANT_TILE(bf16, nf4, DT_BF16, QT_NF4, 64, 3, 2)
QUANT_TILE(bf16, nf4, DT_BF16, QT_NF4, 64, 3, 8)
// ---------------------------------------------------------------------------
// quant_g16: whole tiles of 256*V values at block size 64 (8 lanes a block),
// for 16-bit input; the production kernel of that case (V = 4). It is
// quant_tile with these changes, each bit-identical (checked by
// TestBenchVariants on an H200, where together they took the bf16 kernel from
// 86.8% to 91.6% of copy bandwidth):
//   G16: a tile's 4V absmax values leave as one 4V*4-byte store from lanes
//        0..4V-1 after one shuffle (lane 8j + i offers vector i's maximum of
//        block j, lane L takes vector L/4's of block L%4), instead of 4V
//        shuffles and selects into lanes 0-3 (quant_tile's gather).
//   H2:  a lane's "all finite" test is fma.rn.f16x2(w, 0, acc) over its four
//        raw words (2 values an instruction) instead of a float32 sum of its
//        8 values. For f16 that is exactly "all finite". A bf16 read as f16
//        is inf/NaN whenever the bf16 is (exponent bits 14..10 all ones), and
//        also for finite |x| >= 2^121: those take the slow path, whose codes
//        are the same.
//   LDH: input loads 0 = ld.global.cs (quant_tile's), 2 = plain (production:
//        +4 points of copy on the H200), 3 = ld.global.lu.
//   STH: code stores 0 = st.global.cs, 1 = plain.
//   PF:  lanes 0-15 prefetch into L2 the tile PF rounds ahead (0: none).
// The parameters other than production's are kept for kernels/variants.
// ---------------------------------------------------------------------------

template <int H>
__device__ __forceinline__ uint4 ldq(const void *base, u64 i) {
    const uint4 *p = reinterpret_cast<const uint4 *>(static_cast<const unsigned short *>(base) + i);
    if (H == 0) return __ldcs(p);
    if (H == 3) return __ldlu(p);
    return *p;
}

template <int H>
__device__ __forceinline__ void stw(uint32_t *p, uint32_t w) {
    if (H == 0) __stcs(p, w);
    else *p = w;
}

__device__ __forceinline__ uint32_t hfma0(uint32_t w, uint32_t acc) {
    uint32_t r;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(w), "r"(0u), "r"(acc));
    return r;
}

__device__ __forceinline__ void prefetch_l2(const void *p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

template <int DT, int QT, int V, bool H2, int LDH, int STH, int PF = 0>
__device__ __forceinline__ void qv_tile(const void *__restrict__ x, u64 ntiles, uint8_t *__restrict__ packed,
                                        float *__restrict__ absmax, int *__restrict__ bad) {
    static_assert(DT == DT_BF16 || DT == DT_F16, "qv_tile: 16-bit input");
    __shared__ uint2 tab_s[TAB_COPIES][33];
    load_tab<QT>(tab_s);
    const Tab tab(tab_s);
    const int lane = threadIdx.x & 31;
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    bool nf = false;
    for (u64 tile = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; tile < ntiles; tile += nwarps) {
        const u64 e0 = tile * (256 * V) + 8 * lane;
        Raw<DT> r[V];
        if (PF > 0) {
            // A tile is 512*V bytes: 4*V lines of 128 bytes.
            const u64 ahead = tile + PF * nwarps;
            if (ahead < ntiles && lane < 4 * V)
                prefetch_l2(static_cast<const char *>(x) + ahead * (512 * V) + 128 * lane);
        }
#pragma unroll
        for (int v = 0; v < V; v++) r[v].q = ldq<LDH>(x, e0 + 256 * v);
        float mv[V];
#pragma unroll
        for (int v = 0; v < V; v++) {
            float f[8];
            widen<DT>(r[v], f);
            float m = -FLT_MAX_;
#pragma unroll
            for (int k = 0; k < 8; k++) m = max_ftz(m, fabsf(f[k]));
            bool ok;
            if (H2) {
                uint32_t acc = hfma0(r[v].q.x, 0u);
                acc = hfma0(r[v].q.y, acc);
                acc = hfma0(r[v].q.z, acc);
                acc = hfma0(r[v].q.w, acc);
                ok = acc == 0u;
            } else {
                float sum = 0.0f;
#pragma unroll
                for (int k = 0; k < 8; k++) sum += f[k];
                ok = sum - sum == 0.0f;
            }
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, o));
            const float s = rcp_ftz(m);
            uint32_t w;
            if (ok && m > 0.0f) {
                w = codes8<QT, true>(tab, f, s);
            } else {
                w = codes8<QT, false>(tab, f, s);
#pragma unroll
                for (int k = 0; k < 8; k++) nf |= nonfinite(f[k]);
            }
            stw<STH>(reinterpret_cast<uint32_t *>(packed) + ((e0 + 256 * v) >> 3), w);
            mv[v] = m;
        }
        // Every lane of a block holds its V maxima: lane 8j + i offers
        // vector i's, and lane L takes it from lane 8(L % 4) + L / 4.
        float sel = mv[0];
#pragma unroll
        for (int v = 1; v < V; v++) sel = (lane & 7) == v ? mv[v] : sel;
        const float out = __shfl_sync(0xFFFFFFFFu, sel, 8 * (lane & 3) + (lane >> 2));
        if (lane < 4 * V) absmax[tile * (4 * V) + lane] = out;
    }
    if (nf) *bad = 1;
}

// __launch_bounds__(256) alone: ptxas gives (256, 1) 64 registers where
// (256) gets 43 and 5 CTAs a multiprocessor.
#define QUANT_G16(dt, qt, DT, QT)                                                                 \
    extern "C" __global__ void __launch_bounds__(256) quant_g16_##dt##_##qt##_b64_v4(             \
        const void *__restrict__ x, u64 ntiles, uint8_t *__restrict__ packed,                     \
        float *__restrict__ absmax, int *__restrict__ bad) {                                      \
        qv_tile<DT, QT, 4, true, 2, 0>(x, ntiles, packed, absmax, bad);                           \
    }
QUANT_G16(bf16, nf4, DT_BF16, QT_NF4)
QUANT_G16(bf16, fp4, DT_BF16, QT_FP4)
QUANT_G16(f16, nf4, DT_F16, QT_NF4)
QUANT_G16(f16, fp4, DT_F16, QT_FP4)

// ---------------------------------------------------------------------------
// quant_warp: blocks blk0, blk0+1, ... of any size, one warp per block in a
// grid-stride loop; each lane takes groups of 8. The tensor's short last block
// starts its maximum at 0 (bitsandbytes pads its load with zeros) and packs the
// code of a zero pad after an odd count. Blocks larger than 256 read their
// values twice (the second read mostly from cache).
// ---------------------------------------------------------------------------

template <int DT, int QT>
__device__ __forceinline__ void quant_warp(const void *__restrict__ x, u64 n, int bs, u64 blk0,
                                           uint8_t *__restrict__ packed, float *__restrict__ absmax,
                                           int *__restrict__ bad) {
    __shared__ uint2 tab_s[TAB_COPIES][33];
    load_tab<QT>(tab_s);
    const Tab tab(tab_s);
    const int lane = threadIdx.x & 31;
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    const u64 nblocks = (n + bs - 1) / bs;
    bool nf = false;
    for (u64 blk = blk0 + (((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5); blk < nblocks; blk += nwarps) {
        const u64 start = blk * bs;
        const u64 end = min(start + bs, n);
        float m = end - start < (u64)bs ? 0.0f : -FLT_MAX_;
        for (u64 i = start + 8 * lane; i < end; i += 256) {
            float f[8];
            load8_upto<DT>(x, i, end, f);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                m = max_ftz(m, fabsf(f[k]));
                nf |= nonfinite(f[k]);
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, o));
        const float s = rcp_ftz(m);
        for (u64 i = start + 8 * lane; i < end; i += 256) {
            float f[8];
            load8_upto<DT>(x, i, end, f);
            const uint32_t w = codes8<QT, false>(tab, f, s);
            if (i + 8 <= end) {
                reinterpret_cast<uint32_t *>(packed)[i >> 3] = w;
            } else {
                for (int k = 0; i + 2 * k < end; k++) packed[(i >> 1) + k] = (uint8_t)(w >> (8 * k));
            }
        }
        if (lane == 0) absmax[blk] = m;
    }
    if (nf) *bad = 1;
}

#define QUANT_WARP(dt, qt, DT, QT)                                                                \
    extern "C" __global__ void __launch_bounds__(256) quant_warp_##dt##_##qt(                     \
        const void *__restrict__ x, u64 n, int bs, u64 blk0, uint8_t *__restrict__ packed,        \
        float *__restrict__ absmax, int *__restrict__ bad) {                                      \
        quant_warp<DT, QT>(x, n, bs, blk0, packed, absmax, bad);                                  \
    }
QUANT_WARP(bf16, nf4, DT_BF16, QT_NF4)
QUANT_WARP(bf16, fp4, DT_BF16, QT_FP4)
QUANT_WARP(f16, nf4, DT_F16, QT_NF4)
QUANT_WARP(f16, fp4, DT_F16, QT_FP4)
QUANT_WARP(f32, nf4, DT_F32, QT_NF4)
QUANT_WARP(f32, fp4, DT_F32, QT_FP4)

// ---------------------------------------------------------------------------
// The double-quantization offset: the float32 mean of the absmax values in
// torch's reduction order (quant.MeanF32On, whose comment describes it).
// Launched with exactly g.CTAs CTAs of g.Threads threads (quant.MeanGeometryFor);
// each CTA leaves its partial sum, and the last CTA to finish adds the
// partials and writes sum * factor (factor = float32(1) / float32(n), from the
// host) to *out. *count must be 0 at launch; the last CTA sets it back to 0.
// ---------------------------------------------------------------------------

// block_sum adds v[0..threads) as a halving tree (thread t adds thread t + h
// for h = threads/2, ..., 1), as torch's block_x_reduce does through shared
// memory and then shfl_down with decreasing offsets. Thread 0 gets the sum.
__device__ __forceinline__ float block_sum(float *v, int threads) {
    const int t = threadIdx.x;
    for (int h = threads >> 1; h > 0; h >>= 1) {
        __syncthreads();
        if (t < h) v[t] = add_rn(v[t], v[t + h]);
    }
    __syncthreads();
    return v[0];
}

// thread_sum_vec is thread t's value in CTA c when the reduction is
// vectorized (n >= 128): four running sums, sum k taking position k of the
// four-value vectors c*threads + t + j*step in order of j, and the n % 4
// values past the last whole vector going to sum 0 of threads 0.. of CTA 0.
// Each round issues U vector loads before adding any (mean_torch: U = 2,
// measured as mean_torch_ahead2 in kernels/variants); the adds, and so the
// result, keep that order for every U.
template <int U>
__device__ __forceinline__ float thread_sum_vec(const float *__restrict__ a, u64 n, u64 c, int t, int threads, u64 step) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const u64 nv = n / 4;
    for (u64 i = c * threads + t; i < nv; i += U * step) {
        float4 x[U];
#pragma unroll
        for (int u = 0; u < U; u++)
            if (i + u * step < nv) x[u] = __ldg(reinterpret_cast<const float4 *>(a) + i + u * step);
#pragma unroll
        for (int u = 0; u < U; u++)
            if (i + u * step < nv) {
                acc[0] = add_rn(acc[0], x[u].x);
                acc[1] = add_rn(acc[1], x[u].y);
                acc[2] = add_rn(acc[2], x[u].z);
                acc[3] = add_rn(acc[3], x[u].w);
            }
    }
    const u64 tail = n - n % 4 + t;
    if (c == 0 && tail < n) acc[0] = add_rn(acc[0], __ldg(a + tail));
    return add_rn(add_rn(add_rn(acc[0], acc[1]), acc[2]), acc[3]);
}

// thread_sum is thread t's value otherwise (one CTA): value t + j*threads
// goes to sum j % 4.
__device__ __forceinline__ float thread_sum(const float *__restrict__ a, u64 n, int t, int threads) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int k = 0;
    for (u64 i = t; i < n; i += threads, k = (k + 1) & 3) acc[k] = add_rn(acc[k], __ldg(a + i));
    return add_rn(add_rn(add_rn(acc[0], acc[1]), acc[2]), acc[3]);
}

template <int U>
__device__ __forceinline__ void mean_ahead(const float *__restrict__ a, u64 n, int threads, int vectorized, float factor,
                                           float *partials, unsigned int *count, float *out) {
    __shared__ float v[512];
    __shared__ bool last;
    const int t = threadIdx.x;
    v[t] = vectorized ? thread_sum_vec<U>(a, n, blockIdx.x, t, threads, (u64)threads * gridDim.x)
                      : thread_sum(a, n, t, threads);
    const float s = block_sum(v, threads);
    if (gridDim.x == 1) {
        if (t == 0) *out = mul_rn(s, factor);
        return;
    }
    if (t == 0) {
        partials[blockIdx.x] = s;
        __threadfence();
        last = atomicAdd(count, 1u) == gridDim.x - 1;
    }
    __syncthreads();
    if (!last) return;
    float p = 0.0f;
    for (int i = t; i < (int)gridDim.x; i += threads) p = add_rn(p, __ldcg(partials + i));
    __syncthreads();  // every thread has read v[0] above
    v[t] = p;
    const float sum = block_sum(v, threads);
    if (t == 0) {
        *out = mul_rn(sum, factor);
        *count = 0;
    }
}

// 512 threads and 4 CTAs a multiprocessor (torch's geometry fills them in one
// wave): at most 32 registers. Where a multiprocessor holds fewer than 2048
// threads (sm_75) ptxas warns and ignores the 4.
#define MEAN_TORCH(name, U)                                                                       \
    extern "C" __global__ void __launch_bounds__(512, 4) name(                                    \
        const float *__restrict__ a, u64 n, int threads, int vectorized, float factor,            \
        float *partials, unsigned int *count, float *out) {                                       \
        mean_ahead<U>(a, n, threads, vectorized, factor, partials, count, out);                   \
    }
MEAN_TORCH(mean_torch, 2)


// ---------------------------------------------------------------------------
// Double quantization: absmax - offset (*offset, from mean_torch), blockwise
// 256, 8-bit codes of the signed dynamic map as bitsandbytes' binary search
// finds them. The search is replaced by quant.NestedCodeTable (built on the
// host from the search itself and checked against it for all 2^32 float32
// values): entry k >> 16 of the order-preserving key k of y holds the one
// threshold of its bucket and the codes below and above it. One warp per
// block of 256, eight values a lane.
// ---------------------------------------------------------------------------

__device__ __forceinline__ uint8_t nested_code(const uint32_t *__restrict__ tab, float y) {
    const uint32_t b = __float_as_uint(y);
    const uint32_t k = b ^ ((uint32_t)((int32_t)b >> 31) | 0x80000000u);
    const uint32_t e = __ldg(tab + (k >> 16));
    const uint32_t above = ((e & 0xFFFFu) - (k & 0xFFFFu)) >> 31;
    return (uint8_t)(e >> (16 + 8 * above));
}

// nest_blocks double-quantizes the nested blocks warp, warp + nwarps, ...
__device__ __forceinline__ void nest_blocks(const float *__restrict__ absmax, u64 n, float offset,
                                            const uint32_t *__restrict__ tab, uint8_t *__restrict__ codes,
                                            float *__restrict__ nested, u64 warp, u64 nwarps) {
    const int lane = threadIdx.x & 31;
    for (; warp * 256 < n; warp += nwarps) {
        const u64 start = warp * 256;
        float a[8];
        float mx = start + 256 > n ? 0.0f : -FLT_MAX_;
        if (start + 256 <= n) {
            // Lane l takes the 8 values at 8l: two 16-byte loads.
            const float4 *p = reinterpret_cast<const float4 *>(absmax + start) + 2 * lane;
            const float4 q0 = __ldcs(p), q1 = __ldcs(p + 1);
            const float r[8] = {q0.x, q0.y, q0.z, q0.w, q1.x, q1.y, q1.z, q1.w};
#pragma unroll
            for (int k = 0; k < 8; k++) {
                a[k] = sub_rn(r[k], offset);
                mx = max_ftz(mx, fabsf(a[k]));
            }
        } else {
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const u64 i = start + 8 * lane + k;
                a[k] = i < n ? sub_rn(absmax[i], offset) : 0.0f;
                if (i < n) mx = max_ftz(mx, fabsf(a[k]));
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, o));
        const float scale = rcp_ftz(mx);
        const u64 i0 = start + 8 * lane;
        if (i0 + 8 <= n) {
            uint32_t w0 = 0, w1 = 0;
#pragma unroll
            for (int k = 0; k < 4; k++) {
                w0 |= (uint32_t)nested_code(tab, mul_ftz(a[k], scale)) << (8 * k);
                w1 |= (uint32_t)nested_code(tab, mul_ftz(a[k + 4], scale)) << (8 * k);
            }
            __stcs(reinterpret_cast<uint2 *>(codes + i0), make_uint2(w0, w1));
        } else {
#pragma unroll
            for (int k = 0; k < 8; k++)
                if (i0 + k < n) codes[i0 + k] = nested_code(tab, mul_ftz(a[k], scale));
        }
        if (lane == 0) nested[warp] = mx;
    }
}

extern "C" __global__ void __launch_bounds__(256) nest_quantize(
    const float *__restrict__ absmax, u64 n, const float *__restrict__ offsetp, const uint32_t *__restrict__ tab,
    uint8_t *__restrict__ codes, float *__restrict__ nested) {
    nest_blocks(absmax, n, *offsetp, tab, codes, nested, ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5,
                ((u64)gridDim.x * blockDim.x) >> 5);
}

// ---------------------------------------------------------------------------
// Dequantization: value = map[code] * absmax in float32 (mul.ftz), rounded to
// the output type to nearest even. With double quantization absmax =
// dynmap[code] * nested (mul.ftz) + offset (add.rn). Lane l of a warp takes
// the packed words 32*v + l of its tile (8 values each), all loads first.
// ---------------------------------------------------------------------------

__device__ __forceinline__ uint32_t bf16_bits(float f) {
    const uint32_t u = __float_as_uint(f);
    return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}
__device__ __forceinline__ uint32_t bf16_bits_nan(float f) {
    const uint32_t u = __float_as_uint(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (u >> 16) | 0x40u;  // quiet NaN
    return bf16_bits(f);
}
__device__ __forceinline__ uint32_t f16_bits(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

template <int DT>
__device__ __forceinline__ void store8(void *out, u64 i, const float v[8], bool finite) {
    if constexpr (DT == DT_F32) {
        float4 *p = reinterpret_cast<float4 *>(static_cast<float *>(out) + i);
        __stcs(p, make_float4(v[0], v[1], v[2], v[3]));
        __stcs(p + 1, make_float4(v[4], v[5], v[6], v[7]));
    } else {
        uint32_t w[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t lo, hi;
            if (DT == DT_F16) {
                lo = f16_bits(v[2 * k]);
                hi = f16_bits(v[2 * k + 1]);
            } else if (finite) {
                lo = bf16_bits(v[2 * k]);
                hi = bf16_bits(v[2 * k + 1]);
            } else {
                lo = bf16_bits_nan(v[2 * k]);
                hi = bf16_bits_nan(v[2 * k + 1]);
            }
            w[k] = lo | (hi << 16);
        }
        __stcs(reinterpret_cast<uint4 *>(static_cast<unsigned short *>(out) + i), make_uint4(w[0], w[1], w[2], w[3]));
    }
}

template <int DT>
__device__ __forceinline__ void store1(void *out, u64 i, float v) {
    if (DT == DT_F32) static_cast<float *>(out)[i] = v;
    else if (DT == DT_BF16) static_cast<unsigned short *>(out)[i] = (unsigned short)bf16_bits_nan(v);
    else static_cast<unsigned short *>(out)[i] = (unsigned short)f16_bits(v);
}

// block_absmax is the absmax of block blk: float32 values, or with double
// quantization dynmap[code] * nested (mul.ftz) + offset (add.rn).
template <bool DQ>
__device__ __forceinline__ float block_absmax(u64 blk, const float *__restrict__ absmax, const uint8_t *__restrict__ codes,
                                              const float *__restrict__ nested, float offset, const float *dm) {
    if (DQ) return add_rn(mul_ftz(dm[__ldg(codes + blk)], __ldg(nested + (blk >> 8))), offset);
    return __ldg(absmax + blk);
}

// dequant8 turns the packed word w (8 codes) into 8 values of dt at out[8g].
template <int DT>
__device__ __forceinline__ void dequant8(const float *table, uint32_t w, float am, void *out, u64 g) {
    float f[8];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        f[2 * k] = mul_ftz(table[(w >> (8 * k + 4)) & 15u], am);
        f[2 * k + 1] = mul_ftz(table[(w >> (8 * k)) & 15u], am);
    }
    if (DT == DT_BF16 && fabsf(am) <= FLT_MAX_) {
        // Finite: round each to nearest even and keep the high halves.
        uint32_t r[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const uint32_t u = __float_as_uint(f[k]);
            r[k] = u + 0x7FFFu + ((u >> 16) & 1u);
        }
        __stcs(reinterpret_cast<uint4 *>(static_cast<unsigned short *>(out) + (g << 3)),
               make_uint4(__byte_perm(r[0], r[1], 0x7632), __byte_perm(r[2], r[3], 0x7632),
                          __byte_perm(r[4], r[5], 0x7632), __byte_perm(r[6], r[7], 0x7632)));
        return;
    }
    store8<DT>(out, g << 3, f, false);
}

// dequant: whole tiles of 32*V packed words per warp (lane l takes words
// 32v + l), all loads issued first; then the remaining whole words one per
// lane, and the last n % 8 values on one thread. shift = log2(blocksize) - 3
// maps a word to its block.
template <int DT, int V, bool DQ>
__device__ __forceinline__ void dequant(const uint8_t *__restrict__ packed, u64 n, int shift, int qtype,
                                        const float *__restrict__ absmax, const uint8_t *__restrict__ codes,
                                        const float *__restrict__ nested, float offset,
                                        const float *__restrict__ dynmap, void *__restrict__ out) {
    __shared__ float table[16];
    __shared__ float dm[DQ ? 256 : 1];
    if (threadIdx.x < 16) table[threadIdx.x] = qtype == QT_FP4 ? fp4_map[threadIdx.x] : nf4_map[threadIdx.x];
    if (DQ)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) dm[i] = dynmap[i];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const u64 ngroups = n >> 3;  // whole words of 8 codes
    const u64 ntiles = ngroups / (32 * V);
    const u64 warp0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    const uint32_t *words = reinterpret_cast<const uint32_t *>(packed);
    for (u64 tile = warp0; tile < ntiles; tile += nwarps) {
        const u64 g0 = tile * (32 * V) + lane;
        uint32_t w[V];
        float am[V];
#pragma unroll
        for (int v = 0; v < V; v++) w[v] = __ldcs(words + g0 + 32 * v);
#pragma unroll
        for (int v = 0; v < V; v++) am[v] = block_absmax<DQ>((g0 + 32 * v) >> shift, absmax, codes, nested, offset, dm);
#pragma unroll
        for (int v = 0; v < V; v++) dequant8<DT>(table, w[v], am[v], out, g0 + 32 * v);
    }
    for (u64 g = ntiles * (32 * V) + warp0 * 32 + lane; g < ngroups; g += nwarps * 32)
        dequant8<DT>(table, words[g], block_absmax<DQ>(g >> shift, absmax, codes, nested, offset, dm), out, g);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        for (u64 j = ngroups << 3; j < n; j++) {
            const float a = block_absmax<DQ>(j >> (shift + 3), absmax, codes, nested, offset, dm);
            const uint32_t b = packed[j >> 1];
            store1<DT>(out, j, mul_ftz(table[(j & 1) ? (b & 15u) : (b >> 4)], a));
        }
    }
}

#define DEQUANT1(dt, DT, V, DQ, suffix)                                                           \
    extern "C" __global__ void __launch_bounds__(256) dequant_##dt##_v##V##suffix(                \
        const uint8_t *__restrict__ packed, u64 n, int shift, int qtype,                          \
        const float *__restrict__ absmax, const uint8_t *__restrict__ codes,                      \
        const float *__restrict__ nested, float offset, const float *__restrict__ dynmap,         \
        void *__restrict__ out) {                                                                 \
        dequant<DT, V, DQ>(packed, n, shift, qtype, absmax, codes, nested, offset, dynmap, out);  \
    }
#define DEQUANT(dt, DT, V) DEQUANT1(dt, DT, V, false, _f32) DEQUANT1(dt, DT, V, true, _dq)
DEQUANT(f32, DT_F32, 2)
DEQUANT(f16, DT_F16, 4)
DEQUANT(bf16, DT_BF16, 4)
DEQUANT(bf16, DT_BF16, 2)
DEQUANT(bf16, DT_BF16, 8)

// ---------------------------------------------------------------------------
// dequant_b64: bf16 output at block size 64, the production kernel of that
// case (V = 8, PRMT and AM). It is dequant with these changes, each
// bit-identical (checked by TestBenchVariants on an H200, where the kernel
// with double quantization went from 89.9% to 91.0% of copy bandwidth, both
// at 32 CTAs a multiprocessor):
//   PRMT: a code's table address is one byte_perm of a word holding every
//         nibble times 4 (two shifts and masks for all eight) into the
//         256-aligned table's address, instead of a shift, a mask and an add
//         a code.
//   AM:   lane b < 4V works out block b of the tile's absmax (one code byte
//         and one nested load, or one f32 load) and the lanes take theirs by
//         V shuffles, instead of every lane loading both for each word.
//   PF:   lanes 0..V-1 prefetch into L2 the packed words of the warp's tile
//         one round ahead (128 bytes each).
//   CVT:  (sm_80) the finite path rounds to bf16 pairwise with
//         cvt.rn.bf16x2.f32 (round to nearest even, as the bit arithmetic)
//         instead of three integer operations a value and a byte_perm a pair.
// Production uses PRMT and AM (PF and CVT are for kernels/variants; CVT
// needs compute_80, which nf4.ptx does not target). After the whole tiles,
// the remaining whole words one per lane and the last n % 8 values on one
// thread, as dequant.
// ---------------------------------------------------------------------------

__device__ __forceinline__ float lds_f32(uint32_t addr) {
    float f;
    asm volatile("ld.shared.f32 %0, [%1];" : "=f"(f) : "r"(addr));
    return f;
}

template <bool CVT>
__device__ __forceinline__ uint32_t bf16_pair(float lo, float hi) {
#if __CUDA_ARCH__ >= 800
    if (CVT) {
        uint32_t d;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
        return d;
    }
#endif
    const uint32_t a = __float_as_uint(lo), b = __float_as_uint(hi);
    return __byte_perm(a + 0x7FFFu + ((a >> 16) & 1u), b + 0x7FFFu + ((b >> 16) & 1u), 0x7632);
}

template <bool PRMT, bool CVT>
__device__ __forceinline__ void dv_word(const float *table, uint32_t tbase, uint32_t w, float am, void *out, u64 g) {
    float f[8];
    if (PRMT) {
        const uint32_t lo = (w << 2) & 0x3C3C3C3Cu, hi = (w >> 2) & 0x3C3C3C3Cu;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            f[2 * k] = mul_ftz(lds_f32(__byte_perm(hi, tbase, 0x7650 | k)), am);
            f[2 * k + 1] = mul_ftz(lds_f32(__byte_perm(lo, tbase, 0x7650 | k)), am);
        }
    } else {
#pragma unroll
        for (int k = 0; k < 4; k++) {
            f[2 * k] = mul_ftz(table[(w >> (8 * k + 4)) & 15u], am);
            f[2 * k + 1] = mul_ftz(table[(w >> (8 * k)) & 15u], am);
        }
    }
    if (fabsf(am) <= FLT_MAX_) {
        __stcs(reinterpret_cast<uint4 *>(static_cast<unsigned short *>(out) + (g << 3)),
               make_uint4(bf16_pair<CVT>(f[0], f[1]), bf16_pair<CVT>(f[2], f[3]), bf16_pair<CVT>(f[4], f[5]),
                          bf16_pair<CVT>(f[6], f[7])));
        return;
    }
    store8<DT_BF16>(out, g << 3, f, false);
}

template <int V, bool DQ, bool PRMT, bool AM, bool CVT, bool PF = false>
__device__ __forceinline__ void dv(const uint8_t *__restrict__ packed, u64 n, int qtype, const float *__restrict__ absmax,
                                   const uint8_t *__restrict__ codes, const float *__restrict__ nested, float offset,
                                   const float *__restrict__ dynmap, void *__restrict__ out) {
    __shared__ __align__(256) float table[16];
    __shared__ float dm[DQ ? 256 : 1];
    if (threadIdx.x < 16) table[threadIdx.x] = qtype == QT_FP4 ? fp4_map[threadIdx.x] : nf4_map[threadIdx.x];
    if (DQ)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) dm[i] = dynmap[i];
    __syncthreads();
    const uint32_t tbase = (uint32_t)__cvta_generic_to_shared(table);
    const int lane = threadIdx.x & 31;
    const u64 ngroups = n >> 3;  // whole words of 8 codes
    const u64 ntiles = ngroups / (32 * V);
    const u64 warp0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    const uint32_t *words = reinterpret_cast<const uint32_t *>(packed);
    for (u64 tile = warp0; tile < ntiles; tile += nwarps) {
        const u64 g0 = tile * (32 * V) + lane;
        uint32_t w[V];
        float am[V];
#pragma unroll
        for (int v = 0; v < V; v++) w[v] = __ldcs(words + g0 + 32 * v);
        if (PF && tile + nwarps < ntiles && lane < V) prefetch_l2(words + (tile + nwarps) * (32 * V) + 32 * lane);
        if (AM) {
            float mine = 0.0f;
            if (lane < 4 * V) mine = block_absmax<DQ>(tile * (4 * V) + lane, absmax, codes, nested, offset, dm);
#pragma unroll
            for (int v = 0; v < V; v++) am[v] = __shfl_sync(0xFFFFFFFFu, mine, 4 * v + (lane >> 3));
        } else {
#pragma unroll
            for (int v = 0; v < V; v++) am[v] = block_absmax<DQ>((g0 + 32 * v) >> 3, absmax, codes, nested, offset, dm);
        }
#pragma unroll
        for (int v = 0; v < V; v++) dv_word<PRMT, CVT>(table, tbase, w[v], am[v], out, g0 + 32 * v);
    }
    for (u64 g = ntiles * (32 * V) + warp0 * 32 + lane; g < ngroups; g += nwarps * 32)
        dv_word<PRMT, CVT>(table, tbase, words[g], block_absmax<DQ>(g >> 3, absmax, codes, nested, offset, dm), out, g);
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        for (u64 j = ngroups << 3; j < n; j++) {
            const float a = block_absmax<DQ>(j >> 6, absmax, codes, nested, offset, dm);
            const uint32_t b = packed[j >> 1];
            store1<DT_BF16>(out, j, mul_ftz(table[(j & 1) ? (b & 15u) : (b >> 4)], a));
        }
    }
}

// The signature is dequant's; shift must be 3 (block size 64).
#define DEQUANT_B64(V, DQ, suffix)                                                                \
    extern "C" __global__ void __launch_bounds__(256) dequant_b64_bf16_v##V##suffix(              \
        const uint8_t *__restrict__ packed, u64 n, int shift, int qtype,                          \
        const float *__restrict__ absmax, const uint8_t *__restrict__ codes,                      \
        const float *__restrict__ nested, float offset, const float *__restrict__ dynmap,         \
        void *__restrict__ out) {                                                                 \
        dv<V, DQ, true, true, false>(packed, n, qtype, absmax, codes, nested, offset, dynmap, out); \
    }
DEQUANT_B64(8, false, _f32)
DEQUANT_B64(8, true, _dq)
