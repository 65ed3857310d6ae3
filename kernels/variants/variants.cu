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
// block 64 (shift 3) over whole tiles of 32*V packed words, with the
// production signature of dequant_bf16_v4_dq; the tail is left undone (the
// benchmark's tensor has none).
#include "../nf4.cu"

// ---------------------------------------------------------------------------
// Quantize.
//   G16: a tile's 4V absmax values leave as one 4V*4-byte store from lanes
//        0..4V-1 after one shuffle (lane 8j + i offers vector i's maximum of
//        block j, lane L takes vector L/4's of block L%4), instead of 4V
//        shuffles and selects into lanes 0-3 (the production gather). Same
//        bytes, same 64-byte (V = 4) store.
//   H2:  a lane's "all finite" test is fma.rn.f16x2(w, 0, acc) over its four
//        raw words (2 values an instruction) instead of a float32 sum of its
//        8 values (1 an instruction). A bf16 read as f16 is inf/NaN whenever
//        the bf16 is (exponent bits 14..10 all ones), and also for finite
//        |x| >= 2^121: those take the slow path, whose codes are the same.
//   LDH: input loads 0 = ld.global.cs (production), 2 = plain, 3 = ld.global.lu.
//   STH: code stores 0 = st.global.cs (production), 1 = plain.
//   PF:  before working on a tile, lanes 0-15 of the warp prefetch into L2
//        the 128-byte lines of its tile PF rounds ahead (tile + PF * warps),
//        one instruction a tile and no registers, so DRAM has that tile's
//        reads in flight while the warp computes (0: none, as production).
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

template <int V, bool H2, int LDH, int STH, int PF = 0>
__device__ __forceinline__ void qv_tile(const void *__restrict__ x, u64 ntiles, uint8_t *__restrict__ packed,
                                        float *__restrict__ absmax, int *__restrict__ bad) {
    __shared__ uint2 tab_s[TAB_COPIES][33];
    load_tab<QT_NF4>(tab_s);
    const Tab tab(tab_s);
    const int lane = threadIdx.x & 31;
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    bool nf = false;
    for (u64 tile = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; tile < ntiles; tile += nwarps) {
        const u64 e0 = tile * (256 * V) + 8 * lane;
        Raw<DT_BF16> r[V];
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
            widen<DT_BF16>(r[v], f);
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
                w = codes8<QT_NF4, true>(tab, f, s);
            } else {
                w = codes8<QT_NF4, false>(tab, f, s);
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
        qv_tile<V, H2, LDH, STH, PF>(x, ntiles, packed, absmax, bad);                             \
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
// Dequantize.
//   PRMT: a code's table address is one byte_perm of a word holding every
//         nibble times 4 (two shifts and masks for all eight) into the
//         256-aligned table's address, instead of a shift, a mask and an add
//         a code.
//   AM:   lane b < 4V works out block b of the tile's absmax (one code byte
//         and one nested load, or one f32 load) and the lanes take theirs by
//         V shuffles, instead of every lane loading both for each word.
//   PF:   lanes 0..V-1 prefetch into L2 the packed words of the warp's tile
//         one round ahead (128 bytes each), as in the quantize variants.
//   CVT:  (sm_80) the finite path rounds to bf16 pairwise with
//         cvt.rn.bf16x2.f32 (round to nearest even, as the bit arithmetic)
//         instead of three integer operations a value and a byte_perm a pair.
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
    const u64 ntiles = (n >> 3) / (32 * V);
    const u64 nwarps = ((u64)gridDim.x * blockDim.x) >> 5;
    const uint32_t *words = reinterpret_cast<const uint32_t *>(packed);
    for (u64 tile = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; tile < ntiles; tile += nwarps) {
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
}

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
// mean_torch_ahead<U>: mean_torch with each thread's vectorized loop issuing
// U rounds of float4 loads before adding any (production: four scalar
// loads a round, each round's adds before the next round's loads). The adds,
// and so the result, are in the same order.
// ---------------------------------------------------------------------------

template <int U>
__device__ __forceinline__ float thread_sum_ahead(const float *__restrict__ a, u64 n, u64 c, int t, int threads, u64 step) {
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

template <int U>
__device__ __forceinline__ void mean_ahead(
    const float *__restrict__ a, u64 n, int threads, int vectorized, float factor,
    float *partials, unsigned int *count, float *out) {
    __shared__ float v[512];
    __shared__ bool last;
    const int t = threadIdx.x;
    const u64 step = (u64)threads * gridDim.x;
    v[t] = vectorized ? thread_sum_ahead<U>(a, n, blockIdx.x, t, threads, step)
                      : thread_sum(a, n, blockIdx.x, t, threads, step, 0);
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
    __syncthreads();
    v[t] = p;
    const float sum = block_sum(v, threads);
    if (t == 0) {
        *out = mul_rn(sum, factor);
        *count = 0;
    }
}

// 512 threads and 4 CTAs a multiprocessor (torch's geometry fills them in one
// wave): at most 32 registers.
#define MEAN_AHEAD(U)                                                                             \
    extern "C" __global__ void __launch_bounds__(512, 4) mean_torch_ahead##U(                     \
        const float *__restrict__ a, u64 n, int threads, int vectorized, float factor,            \
        float *partials, unsigned int *count, float *out) {                                       \
        mean_ahead<U>(a, n, threads, vectorized, factor, partials, count, out);                   \
    }
MEAN_AHEAD(2)
MEAN_AHEAD(4)
