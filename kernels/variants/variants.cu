// variants.cu: candidate quantize, dequantize and mean kernels for the
// benchmark (issue 18 item 4), not part of the tools. It includes nf4.cu for
// its helpers, so each variant differs from the production kernel only where
// its comment says. scripts/bench-variants.sh pack builds it twice: for
// compute_75 (the production target: variants that could replace a kernel as
// they are) and for compute_80 (also the variants that need sm_80
// instructions, under __CUDA_ARCH__ >= 800). TestBenchVariants times each one
// against the production kernel on the same data and checks its output is
// byte-identical to the production kernel's.
//
// All quantize variants are bf16 -> NF4 at block 64 (8 lanes a block, tiles of
// 256*V values a warp, whole tiles only), with the production signature of
// quant_tile_bf16_nf4_b64_v4. All dequantize variants are NF4/FP4 -> bf16 at
// block 64 (shift 3) in tiles of 32*V packed words, with the production
// signature of dequant_bf16_v4_dq.
#include "../nf4.cu"

// ---------------------------------------------------------------------------
// Quantize: qv_tile (nf4.cu, where quant_g16_* use it) with its options
// G16 and H2 always, LDH, STH and PF as that comment describes.
// ---------------------------------------------------------------------------

// LB(m) is __launch_bounds__(256, m), or (256) alone for m = 0: ptxas gives
// a kernel with (256, 1) 64 registers where (256) gets the production's 43.
#define LB0 __launch_bounds__(256)
#define LB4 __launch_bounds__(256, 4)
#define LB5 __launch_bounds__(256, 5)
#define LB6 __launch_bounds__(256, 6)
#define LB8 __launch_bounds__(256, 8)
#define QVP(name, LB, V, H2, LDH, STH, PF)                                                        \
    extern "C" __global__ void LB name(const void *__restrict__ x, u64 ntiles,                    \
                                       uint8_t *__restrict__ packed, float *__restrict__ absmax,   \
                                       int *__restrict__ bad) {                                    \
        qv_tile<DT_BF16, QT_NF4, V, H2, LDH, STH, PF>(x, ntiles, packed, absmax, bad);            \
    }
#define QV(name, LB, V, H2, LDH, STH) QVP(name, LB, V, H2, LDH, STH, 0)
QV(qv4_g16, LB0, 4, false, 0, 0)
QV(qv4_g16_h2, LB0, 4, true, 0, 0)
QV(qv4_g16_h2_lb6, LB6, 4, true, 0, 0)
QV(qv4_g16_h2_lb8, LB8, 4, true, 0, 0)
QV(qv8_g16_h2, LB0, 8, true, 0, 0)
QV(qv8_g16_h2_lb4, LB4, 8, true, 0, 0)
QV(qv2_g16_h2, LB0, 2, true, 0, 0)
QV(qv2_g16_h2_lb8, LB8, 2, true, 0, 0)
QV(qv4_g16_h2_ldplain, LB0, 4, true, 2, 0)
QV(qv4_g16_h2_ldlu, LB0, 4, true, 3, 0)
QV(qv4_g16_h2_stplain, LB0, 4, true, 0, 1)
QV(qv8_g16_h2_stplain, LB0, 8, true, 0, 1)
QVP(qv4_g16_h2_pf1_lb5, LB5, 4, true, 0, 0, 1)
QVP(qv4_g16_h2_pf2_lb5, LB5, 4, true, 0, 0, 2)
QVP(qv4_g16_h2_pf1_lb6, LB6, 4, true, 0, 0, 1)
QVP(qv2_g16_h2_pf1_lb6, LB6, 2, true, 0, 0, 1)
QVP(qv2_g16_h2_pf2_lb6, LB6, 2, true, 0, 0, 2)
QVP(qv8_g16_h2_pf1_lb4, LB4, 8, true, 0, 0, 1)
QV(qv4_g16_h2_lb5, LB5, 4, true, 0, 0)

// ---------------------------------------------------------------------------
// Quantize through cp.async (sm_80): each warp keeps a ring of S tiles in
// shared memory and, before working on a tile, issues the copies of the tile
// S-1 rounds ahead, so the warp's reads stay in flight while it computes
// without holding registers. A lane reads back only the 16-byte pieces it
// copied itself, so its own cp.async.wait_group is all the ordering needed.
// Otherwise as qv_tile with G16 and H2.
// ---------------------------------------------------------------------------
#if __CUDA_ARCH__ >= 800
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"((uint32_t)__cvta_generic_to_shared(smem)), "l"(gmem));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

// qa_issue copies a lane's V pieces of tile t (if there is one) to dst[32v]
// and closes the group (an empty one past the end keeps the count).
template <int V>
__device__ __forceinline__ void qa_issue(uint4 *dst, const uint4 *src, u64 t, u64 ntiles) {
    if (t < ntiles)
#pragma unroll
        for (int v = 0; v < V; v++) cp_async16(dst + 32 * v, src + t * (32 * V) + 32 * v);
    cp_commit();
}

template <int V, int S>
__device__ __forceinline__ void qa_tile(const void *__restrict__ x, u64 ntiles, uint8_t *__restrict__ packed,
                                        float *__restrict__ absmax, int *__restrict__ bad) {
    __shared__ uint2 tab_s[TAB_COPIES][33];
    __shared__ __align__(16) uint4 ring[8][S][32 * V];
    load_tab<QT_NF4>(tab_s);
    const Tab tab(tab_s);
    const int lane = threadIdx.x & 31;
    uint4(*my)[32 * V] = ring[(threadIdx.x >> 5) & 7];
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    const u64 tile0 = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const uint4 *xs = static_cast<const uint4 *>(x) + lane;
#pragma unroll
    for (int s = 0; s < S - 1; s++) qa_issue<V>(my[s] + lane, xs, tile0 + s * nwarps, ntiles);
    bool nf = false;
    int slot = 0;
    for (u64 tile = tile0; tile < ntiles; tile += nwarps) {
        qa_issue<V>(my[(slot + S - 1) % S] + lane, xs, tile + (S - 1) * nwarps, ntiles);
        cp_wait<S - 1>();
        const u64 e0 = tile * (256 * V) + 8 * lane;
        Raw<DT_BF16> r[V];
#pragma unroll
        for (int v = 0; v < V; v++) r[v].q = my[slot][32 * v + lane];
        slot = (slot + 1) % S;
        float mv[V];
#pragma unroll
        for (int v = 0; v < V; v++) {
            float f[8];
            widen<DT_BF16>(r[v], f);
            float m = -FLT_MAX_;
#pragma unroll
            for (int k = 0; k < 8; k++) m = max_ftz(m, fabsf(f[k]));
            uint32_t acc = hfma0(r[v].q.x, 0u);
            acc = hfma0(r[v].q.y, acc);
            acc = hfma0(r[v].q.z, acc);
            acc = hfma0(r[v].q.w, acc);
#pragma unroll
            for (int o = 1; o < 8; o <<= 1) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, o));
            const float s = rcp_ftz(m);
            uint32_t w;
            if (acc == 0u && m > 0.0f) {
                w = codes8<QT_NF4, true>(tab, f, s);
            } else {
                w = codes8<QT_NF4, false>(tab, f, s);
#pragma unroll
                for (int k = 0; k < 8; k++) nf |= nonfinite(f[k]);
            }
            __stcs(reinterpret_cast<uint32_t *>(packed) + ((e0 + 256 * v) >> 3), w);
            mv[v] = m;
        }
        float sel = mv[0];
#pragma unroll
        for (int v = 1; v < V; v++) sel = (lane & 7) == v ? mv[v] : sel;
        const float out = __shfl_sync(0xFFFFFFFFu, sel, 8 * (lane & 3) + (lane >> 2));
        if (lane < 4 * V) absmax[tile * (4 * V) + lane] = out;
    }
    cp_wait<0>();
    if (nf) *bad = 1;
}
#define QA(name, LB, V, S)                                                                        \
    extern "C" __global__ void LB name(const void *__restrict__ x, u64 ntiles,                    \
                                       uint8_t *__restrict__ packed, float *__restrict__ absmax,   \
                                       int *__restrict__ bad) {                                    \
        qa_tile<V, S>(x, ntiles, packed, absmax, bad);                                            \
    }
QA(qa4_s2, LB0, 4, 2)
QA(qa4_s2_lb5, LB5, 4, 2)
QA(qa2_s3, LB0, 2, 3)
QA(qa2_s4, LB0, 2, 4)
QA(qa2_s4_lb6, LB6, 2, 4)
#endif

// ---------------------------------------------------------------------------
// Dequantize: dv (nf4.cu, where dequant_b64_bf16_v8_* use it) with its
// options PRMT, AM, PF and CVT as that comment describes.
// ---------------------------------------------------------------------------

#define DV1(name, V, DQ, PRMT, AM, CVT) DV1P(name, V, DQ, PRMT, AM, CVT, false)
#define DV1P(name, V, DQ, PRMT, AM, CVT, PF)                                                      \
    extern "C" __global__ void __launch_bounds__(256) name(                                       \
        const uint8_t *__restrict__ packed, u64 n, int shift, int qtype,                          \
        const float *__restrict__ absmax, const uint8_t *__restrict__ codes,                      \
        const float *__restrict__ nested, float offset, const float *__restrict__ dynmap,         \
        void *__restrict__ out) {                                                                 \
        dv<V, DQ, PRMT, AM, CVT, PF>(packed, n, qtype, absmax, codes, nested, offset, dynmap, out); \
    }
#define DV(name, V, PRMT, AM, CVT) DV1(name##_f32, V, false, PRMT, AM, CVT) DV1(name##_dq, V, true, PRMT, AM, CVT)
#define DVP(name, V, PRMT, AM, CVT) \
    DV1P(name##_f32, V, false, PRMT, AM, CVT, true) DV1P(name##_dq, V, true, PRMT, AM, CVT, true)
DV(dv4_prmt, 4, true, false, false)
DV(dv4_am, 4, false, true, false)
DV(dv4_prmt_am, 4, true, true, false)
DV(dv8_prmt_am, 8, true, true, false)
DV(dv2_prmt_am, 2, true, true, false)
DVP(dv4_prmt_am_pf, 4, true, true, false)
#if __CUDA_ARCH__ >= 800
DV(dv4_cvt, 4, false, false, true)
DV(dv4_prmt_cvt, 4, true, false, true)
DV(dv4_prmt_am_cvt, 4, true, true, true)
DV(dv8_prmt_am_cvt, 8, true, true, true)
DV(dv2_prmt_am_cvt, 2, true, true, true)
DVP(dv4_prmt_am_cvt_pf, 4, true, true, true)
DVP(dv8_prmt_am_cvt_pf, 8, true, true, true)
#endif

// ---------------------------------------------------------------------------
// mean_torch_ahead<U>: mean_torch (nf4.cu, U = 2) with U rounds of float4
// loads issued before adding any. The adds, and so the result, are in the
// same order.
// ---------------------------------------------------------------------------
MEAN_TORCH(mean_torch_ahead4, 4)
