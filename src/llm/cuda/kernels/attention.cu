// Fused causal attention for training on CUDA, forward and backward (see
// `src/llm/cuda/attention.rs`), in the manner of FlashAttention-2: the [seq, seq] score matrix
// never exists in memory. Inputs q [b, nh, s, D], k and v [b, nkv, s, D] (grouped-query: query
// head h reads key/value head h / (nh / nkv)), contiguous, f32 or bf16; all arithmetic in f32.
//
// forward:  out [b, nh, s, D + 1] f32 = softmax(scale·q·kᵀ + causal)·v, and in column D the
//           row's log-sum-exp, which the backward uses to rebuild the probabilities.
// backward: dq [b, nh, s, D], then dk and dv [b, nkv, s, D] (summed over the query heads that
//           share a key/value head), all f32.

#include <cuda_bf16.h>
#include <stdint.h>

#include "common.cuh"

#include <mma.h>

#define BQ 64   // query rows per block of the forward and dq kernels (one per thread)
#define BK 32   // keys per shared-memory tile of those kernels
#define BKV 64  // key rows per block of the dk/dv kernel (one per thread)
#define BQ2 16  // query rows per shared-memory tile of the dk/dv kernel


template <typename T, int D>
__device__ void attn_fwd(const T* q, const T* k, const T* v, float* out, int nh, int nkv, int s,
                         float scale) {
    __shared__ float ks[BK][D];
    __shared__ float vs[BK][D];
    int b = blockIdx.z, h = blockIdx.y;
    int i = blockIdx.x * BQ + threadIdx.x;
    int kvh = h / (nh / nkv);
    const T* qp = q + (((size_t)b * nh + h) * s + min(i, s - 1)) * D;
    const T* kb = k + ((size_t)b * nkv + kvh) * s * D;
    const T* vb = v + ((size_t)b * nkv + kvh) * s * D;
    float qr[D], acc[D];
#pragma unroll
    for (int e = 0; e < D; e++) {
        qr[e] = ld(qp + e) * scale;
        acc[e] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    int kend = min(s, (int)(blockIdx.x * BQ + BQ));
    for (int k0 = 0; k0 < kend; k0 += BK) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < BK * D; idx += blockDim.x) {
            int r = idx / D, e = idx % D, j = k0 + r;
            ks[r][e] = j < s ? ld(kb + (size_t)j * D + e) : 0.f;
            vs[r][e] = j < s ? ld(vb + (size_t)j * D + e) : 0.f;
        }
        __syncthreads();
        float sc[BK];
        float tmax = -INFINITY;
#pragma unroll
        for (int jj = 0; jj < BK; jj++) {
            float d = 0.f;
#pragma unroll
            for (int e = 0; e < D; e++) d += qr[e] * ks[jj][e];
            int j = k0 + jj;
            sc[jj] = (j <= i && j < s) ? d : -INFINITY;
            tmax = fmaxf(tmax, sc[jj]);
        }
        if (tmax == -INFINITY) continue;
        float mn = fmaxf(m, tmax);
        float corr = expf(m - mn);
        l *= corr;
#pragma unroll
        for (int e = 0; e < D; e++) acc[e] *= corr;
#pragma unroll
        for (int jj = 0; jj < BK; jj++) {
            float p = expf(sc[jj] - mn);
            l += p;
#pragma unroll
            for (int e = 0; e < D; e++) acc[e] += p * vs[jj][e];
        }
        m = mn;
    }
    if (i < s) {
        float* op = out + (((size_t)b * nh + h) * s + i) * (D + 1);
        float inv = 1.f / l;
#pragma unroll
        for (int e = 0; e < D; e++) op[e] = acc[e] * inv;
        op[D] = m + logf(l);
    }
}

// dq_i = scale · Σ_j p_ij (dp_ij − Δ_i) k_j, with p_ij = exp(scale·q_i·k_j − lse_i),
// dp_ij = do_i·v_j and Δ_i = do_i·o_i (written to `delta` for the dk/dv kernel).
template <typename T, int D>
__device__ void attn_bwd_dq(const T* q, const T* k, const T* v, const float* fwd,
                            const float* dout, float* dq, float* delta, int nh, int nkv, int s,
                            float scale) {
    __shared__ float ks[BK][D];
    __shared__ float vs[BK][D];
    int b = blockIdx.z, h = blockIdx.y;
    int i = blockIdx.x * BQ + threadIdx.x;
    int ic = min(i, s - 1);
    int kvh = h / (nh / nkv);
    size_t row = ((size_t)b * nh + h) * s + ic;
    const T* qp = q + row * D;
    const float* op = fwd + row * (D + 1);
    const float* dp = dout + row * (D + 1);
    const T* kb = k + ((size_t)b * nkv + kvh) * s * D;
    const T* vb = v + ((size_t)b * nkv + kvh) * s * D;
    float qr[D], dr[D], acc[D];
    float di = 0.f;
#pragma unroll
    for (int e = 0; e < D; e++) {
        qr[e] = ld(qp + e) * scale;
        dr[e] = dp[e];
        di += dr[e] * op[e];
        acc[e] = 0.f;
    }
    float lse = op[D];
    int kend = min(s, (int)(blockIdx.x * BQ + BQ));
    for (int k0 = 0; k0 < kend; k0 += BK) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < BK * D; idx += blockDim.x) {
            int r = idx / D, e = idx % D, j = k0 + r;
            ks[r][e] = j < s ? ld(kb + (size_t)j * D + e) : 0.f;
            vs[r][e] = j < s ? ld(vb + (size_t)j * D + e) : 0.f;
        }
        __syncthreads();
#pragma unroll 2
        for (int jj = 0; jj < BK; jj++) {
            int j = k0 + jj;
            if (j > i || j >= s) break;
            float sd = 0.f, pd = 0.f;
#pragma unroll
            for (int e = 0; e < D; e++) {
                sd += qr[e] * ks[jj][e];
                pd += dr[e] * vs[jj][e];
            }
            float ds = expf(sd - lse) * (pd - di);
#pragma unroll
            for (int e = 0; e < D; e++) acc[e] += ds * ks[jj][e];
        }
    }
    if (i < s) {
        float* o = dq + row * D;
#pragma unroll
        for (int e = 0; e < D; e++) o[e] = acc[e] * scale;
        delta[row] = di;
    }
}

// dv_j = Σ_i p_ij do_i and dk_j = Σ_i p_ij (dp_ij − Δ_i) scale·q_i over the query heads of
// key/value head `kvh` and the rows i ≥ j.
template <typename T, int D>
__device__ void attn_bwd_dkv(const T* q, const T* k, const T* v, const float* fwd,
                             const float* dout, const float* delta, float* dk, float* dv,
                             int nh, int nkv, int s, float scale) {
    __shared__ float kS[BKV][D + 1];
    __shared__ float vS[BKV][D + 1];
    __shared__ float qS[BQ2][D];
    __shared__ float dS[BQ2][D];
    __shared__ float lseS[BQ2], delS[BQ2];
    int b = blockIdx.z, kvh = blockIdx.y;
    int j0 = blockIdx.x * BKV, j = j0 + threadIdx.x;
    const T* kb = k + ((size_t)b * nkv + kvh) * s * D;
    const T* vb = v + ((size_t)b * nkv + kvh) * s * D;
    for (int idx = threadIdx.x; idx < BKV * D; idx += blockDim.x) {
        int r = idx / D, e = idx % D, jr = j0 + r;
        kS[r][e] = jr < s ? ld(kb + (size_t)jr * D + e) : 0.f;
        vS[r][e] = jr < s ? ld(vb + (size_t)jr * D + e) : 0.f;
    }
    float dka[D], dva[D];
#pragma unroll
    for (int e = 0; e < D; e++) {
        dka[e] = 0.f;
        dva[e] = 0.f;
    }
    int rep = nh / nkv;
    for (int hh = 0; hh < rep; hh++) {
        int h = kvh * rep + hh;
        size_t base = ((size_t)b * nh + h) * s;
        for (int i0 = (j0 / BQ2) * BQ2; i0 < s; i0 += BQ2) {
            __syncthreads();
            for (int idx = threadIdx.x; idx < BQ2 * D; idx += blockDim.x) {
                int r = idx / D, e = idx % D, i = i0 + r;
                bool ok = i < s;
                qS[r][e] = ok ? ld(q + (base + i) * D + e) * scale : 0.f;
                dS[r][e] = ok ? dout[(base + i) * (D + 1) + e] : 0.f;
            }
            if (threadIdx.x < BQ2) {
                int i = i0 + threadIdx.x;
                lseS[threadIdx.x] = i < s ? fwd[(base + i) * (D + 1) + D] : INFINITY;
                delS[threadIdx.x] = i < s ? delta[base + i] : 0.f;
            }
            __syncthreads();
            if (j >= s) continue;
#pragma unroll 2
            for (int ii = 0; ii < BQ2; ii++) {
                int i = i0 + ii;
                if (i < j || i >= s) continue;
                float sd = 0.f, pd = 0.f;
#pragma unroll
                for (int e = 0; e < D; e++) {
                    sd += qS[ii][e] * kS[threadIdx.x][e];
                    pd += dS[ii][e] * vS[threadIdx.x][e];
                }
                float p = expf(sd - lseS[ii]);
                float ds = p * (pd - delS[ii]);
#pragma unroll
                for (int e = 0; e < D; e++) {
                    dva[e] += p * dS[ii][e];
                    dka[e] += ds * qS[ii][e];
                }
            }
        }
    }
    if (j < s) {
        size_t row = ((size_t)b * nkv + kvh) * s + j;
#pragma unroll
        for (int e = 0; e < D; e++) {
            dk[row * D + e] = dka[e];
            dv[row * D + e] = dva[e];
        }
    }
}

#define ATTN_KERNELS(T, SUF)                                                                    \
    extern "C" __global__ void attn_fwd_##SUF(const T* q, const T* k, const T* v, float* out,   \
                                             int nh, int nkv, int s, float scale) {             \
        attn_fwd<T, 64>(q, k, v, out, nh, nkv, s, scale);                                       \
    }                                                                                           \
    extern "C" __global__ void attn_bwd_dq_##SUF(const T* q, const T* k, const T* v,            \
                                                const float* fwd, const float* dout, float* dq, \
                                                float* delta, int nh, int nkv, int s,           \
                                                float scale) {                                  \
        attn_bwd_dq<T, 64>(q, k, v, fwd, dout, dq, delta, nh, nkv, s, scale);                   \
    }                                                                                           \
    extern "C" __global__ void attn_bwd_dkv_##SUF(                                              \
        const T* q, const T* k, const T* v, const float* fwd, const float* dout,                \
        const float* delta, float* dk, float* dv, int nh, int nkv, int s, float scale) {        \
        attn_bwd_dkv<T, 64>(q, k, v, fwd, dout, delta, dk, dv, nh, nkv, s, scale);              \
    }

ATTN_KERNELS(float, f32)
ATTN_KERNELS(__nv_bfloat16, bf16)

// The forward on tensor cores (bf16 inputs, head size 64), same output as `attn_fwd`: a block
// of 4 warps takes 64 query rows, each warp 16 of them; per tile of 64 keys a warp computes
// S = Q·Kᵀ with wmma (16×16×16 bf16, f32 accumulation), the online softmax of its rows in f32
// (two lanes per row, 32 columns each; the running output lives in those lanes' registers),
// and P·V with wmma again.
#define TC_Q 64
#define TC_K 64
#define TC_D 64
#define TC_LDS 68  // f32 row stride of the per-warp score tile (a multiple of 4)
#define TC_LDP 72  // bf16 row stride of the per-warp probability tile (a multiple of 8)

typedef nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> Acc;
typedef nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16,
                               nvcuda::wmma::row_major>
    FragA;

// acc += A·B over k = 64, A [16 × 64] and B [64 × 16] in shared memory; `a_step` and `b_step`
// are how far each operand's pointer moves per 16 of k (16 along a row, 16·ld across rows).
template <typename LA, typename LB>
__device__ __forceinline__ void mma64(Acc& acc, const __nv_bfloat16* a, int lda, int a_step,
                                      const __nv_bfloat16* b, int ldb, int b_step) {
    using namespace nvcuda;
#pragma unroll
    for (int t = 0; t < 4; t++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, LA> af;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> bf;
        wmma::load_matrix_sync(af, a + t * a_step, lda);
        wmma::load_matrix_sync(bf, b + t * b_step, ldb);
        wmma::mma_sync(acc, af, bf, acc);
    }
}

// Rows row0 .. row0 + 63 of a [s, 64] bf16 matrix into shared memory with row stride `ld`
// (rows past the end zero), in 16-byte vectors, by the whole block.
__device__ __forceinline__ void load_tile64(__nv_bfloat16* dst, int ld, const __nv_bfloat16* src,
                                            int row0, int s) {
    for (int idx = threadIdx.x; idx < 64 * TC_D / 8; idx += blockDim.x) {
        int r = idx / (TC_D / 8), c = (idx % (TC_D / 8)) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (row0 + r < s) val = *(const uint4*)(src + (size_t)(row0 + r) * TC_D + c);
        *(uint4*)(dst + r * ld + c) = val;
    }
}

// The same with A's four k-slices already in registers.
template <typename LB>
__device__ __forceinline__ void mma64(Acc& acc, const FragA* a, const __nv_bfloat16* b, int ldb,
                                      int b_step) {
    using namespace nvcuda;
#pragma unroll
    for (int t = 0; t < 4; t++) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> bf;
        wmma::load_matrix_sync(bf, b + t * b_step, ldb);
        wmma::mma_sync(acc, a[t], bf, acc);
    }
}

// A warp's 16 × 64 product A·Mᵀ into `dst` (f32, row stride TC_LDS): A's four k-slices in
// registers, M [64 rows][64] bf16 in shared memory with row stride `ld` (read column-major).
__device__ __forceinline__ void rows_times_t(float* dst, const FragA* a, const __nv_bfloat16* m,
                                             int ld) {
    using namespace nvcuda;
#pragma unroll
    for (int n = 0; n < 4; n++) {
        Acc acc;
        wmma::fill_fragment(acc, 0.f);
        mma64<wmma::col_major>(acc, a, m + n * 16 * ld, ld, 16);
        wmma::store_matrix_sync(dst + n * 16, acc, TC_LDS, wmma::mem_row_major);
    }
}

// Four accumulators (a 16 × 64 tile) into `dst` (f32, row stride TC_LDS).
__device__ __forceinline__ void store_rows(float* dst, const Acc* f) {
#pragma unroll
    for (int n = 0; n < 4; n++)
        nvcuda::wmma::store_matrix_sync(dst + n * 16, f[n], TC_LDS, nvcuda::wmma::mem_row_major);
}

// Rows q0 .. q0 + 63 of an output gradient [s, 65] f32 (log-sum-exp column skipped) into
// shared memory as bf16 with row stride `ld` (rows past the end zero), by the whole block.
__device__ __forceinline__ void load_dout_tile64(__nv_bfloat16* dst, int ld, const float* dout,
                                                 int q0, int s) {
    for (int idx = threadIdx.x; idx < 64 * TC_D; idx += blockDim.x) {
        int r = idx / TC_D, c = idx % TC_D;
        float g = q0 + r < s ? dout[(size_t)(q0 + r) * (TC_D + 1) + c] : 0.f;
        dst[r * ld + c] = __float2bfloat16(g);
    }
}

extern "C" __global__ void attn_fwd_tc_bf16(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                            const __nv_bfloat16* v, float* out, int nh, int nkv,
                                            int s, float scale) {
    using namespace nvcuda;
    __shared__ __align__(32) __nv_bfloat16 ks[TC_K * TC_D];
    __shared__ __align__(32) __nv_bfloat16 vs[TC_K * TC_D];
    __shared__ __align__(32) float ss[4][16 * TC_LDS];
    __shared__ __align__(32) __nv_bfloat16 ps[4][16 * TC_LDP];
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * TC_Q;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kvh = h / (nh / nkv);
    const __nv_bfloat16* qb = q + ((size_t)b * nh + h) * s * TC_D;
    const __nv_bfloat16* kb = k + ((size_t)b * nkv + kvh) * s * TC_D;
    const __nv_bfloat16* vb = v + ((size_t)b * nkv + kvh) * s * TC_D;

    // Q tile, staged through `ks` (rows past the end zero), into each warp's fragments.
    load_tile64(ks, TC_D, qb, q0, s);
    __syncthreads();
    FragA qf[TC_D / 16];
#pragma unroll
    for (int t = 0; t < TC_D / 16; t++)
        wmma::load_matrix_sync(qf[t], ks + warp * 16 * TC_D + t * 16, TC_D);

    const int r = lane >> 1, c0 = (lane & 1) * 32;
    const int i = q0 + warp * 16 + r;  // this lane's query row
    const int warp_last = q0 + warp * 16 + 15;
    float o[32];
#pragma unroll
    for (int e = 0; e < 32; e++) o[e] = 0.f;
    float m = -INFINITY, l = 0.f;
    float* sw = ss[warp];
    __nv_bfloat16* pw = ps[warp];

    const int kend = min(s, q0 + TC_Q);
    for (int k0 = 0; k0 < kend; k0 += TC_K) {
        __syncthreads();
        load_tile64(ks, TC_D, kb, k0, s);
        load_tile64(vs, TC_D, vb, k0, s);
        __syncthreads();
        if (k0 > warp_last) continue;  // every key of the tile is after this warp's rows

        // S = Q·Kᵀ for the warp's 16 rows.
        rows_times_t(sw, qf, ks, TC_D);
        __syncwarp();

        // Online softmax of this lane's half row.
        float sc[32];
        float tmax = -INFINITY;
#pragma unroll
        for (int e = 0; e < 32; e++) {
            int j = k0 + c0 + e;
            float x = sw[r * TC_LDS + c0 + e] * scale;
            sc[e] = (j <= i && j < s) ? x : -INFINITY;
            tmax = fmaxf(tmax, sc[e]);
        }
        tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
        float mn = fmaxf(m, tmax);
        float corr = mn == -INFINITY ? 1.f : expf(m - mn);
        float psum = 0.f;
#pragma unroll
        for (int e = 0; e < 32; e++) {
            float p = sc[e] == -INFINITY ? 0.f : expf(sc[e] - mn);
            psum += p;
            pw[r * TC_LDP + c0 + e] = __float2bfloat16(p);
        }
        psum += __shfl_xor_sync(0xffffffffu, psum, 1);
        l = l * corr + psum;
        m = mn;
#pragma unroll
        for (int e = 0; e < 32; e++) o[e] *= corr;
        __syncwarp();

        // O += P·V.
#pragma unroll
        for (int n = 0; n < TC_D / 16; n++) {
            Acc acc;
            wmma::fill_fragment(acc, 0.f);
            mma64<wmma::row_major, wmma::row_major>(acc, pw, TC_LDP, 16, vs + n * 16, TC_D,
                                                    16 * TC_D);
            wmma::store_matrix_sync(sw + n * 16, acc, TC_LDS, wmma::mem_row_major);
        }
        __syncwarp();
#pragma unroll
        for (int e = 0; e < 32; e++) o[e] += sw[r * TC_LDS + c0 + e];
        __syncwarp();
    }
    if (i < s) {
        float* op = out + (((size_t)b * nh + h) * s + i) * (TC_D + 1);
        float inv = 1.f / l;
#pragma unroll
        for (int e = 0; e < 32; e++) op[c0 + e] = o[e] * inv;
        if (c0 == 0) op[TC_D] = m + logf(l);
    }
}

// Δ_i = do_i·o_i for every row (tensor-core backward) (what the backward's dS = P∘(dP − Δ) needs), from the forward's
// output and its gradient, both [rows, 65] f32.
extern "C" __global__ void attn_delta(const float* fwd, const float* dout, float* delta,
                                      size_t rows) {
    size_t row = (size_t)blockIdx.x * (blockDim.x / 32) + (threadIdx.x / 32);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float* o = fwd + row * (TC_D + 1);
    const float* d = dout + row * (TC_D + 1);
    // do rounded to bf16 as the backward kernel reads it, so that Σ_j P_ij·(dP_ij − Δ_i) = 0
    // holds for the values actually used.
    auto bf = [](float x) { return __bfloat162float(__float2bfloat16(x)); };
    float acc = o[lane] * bf(d[lane]) + o[lane + 32] * bf(d[lane + 32]);
    acc = warp_sum(acc);
    if (lane == 0) delta[row] = acc;
}

// The backward's dK and dV on tensor cores (bf16 inputs, head size 64), in FlashAttention-2's
// order: a block owns 64 keys of one key/value head (4 warps, 16 keys each) and walks over the
// query heads that share it and the query tiles that can see its keys. Per tile, with wmma:
//   Sᵀ = K·Qᵀ, Pᵀ = exp(scale·Sᵀ − lse), dV += Pᵀ·dO, dPᵀ = V·dOᵀ, dSᵀ = Pᵀ∘(dPᵀ − Δ),
//   dK += scale·dSᵀ·Q.
// dk and dv are written once at the end (no other block owns those keys). dQ has a kernel of
// its own (`attn_bwd_dq_tc_bf16`) rather than atomic adds, so that a run is bit-reproducible.
#define TC_LD 72  // bf16 row stride of the shared tiles
extern "C" __global__ void attn_bwd_tc_bf16(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                            const __nv_bfloat16* v, const float* fwd,
                                            const float* dout, const float* delta, float* dk,
                                            float* dv, int nh, int nkv, int s, float scale) {
    using namespace nvcuda;
    extern __shared__ __align__(32) unsigned char smem[];
    __nv_bfloat16* ks = (__nv_bfloat16*)smem;      // [64 keys][TC_LD]
    __nv_bfloat16* qs = ks + 64 * TC_LD;           // [64 queries][TC_LD]
    __nv_bfloat16* dos = qs + 64 * TC_LD;          // [64 queries][TC_LD]
    __nv_bfloat16* pts = dos + 64 * TC_LD;         // [64 keys][TC_LD]: Pᵀ, then dSᵀ (per warp)
    float* sf = (float*)(pts + 64 * TC_LD);        // [4 warps][16][TC_LDS]
    float* lse_s = sf + 4 * 16 * TC_LDS;           // [64]
    float* delta_s = lse_s + 64;                   // [64]

    const int b = blockIdx.z, kvh = blockIdx.y, k0 = blockIdx.x * 64;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int rep = nh / nkv;
    const int r = lane >> 1, c0 = (lane & 1) * 32;
    const int key = k0 + warp * 16 + r;  // this lane's key row
    float* sw = sf + warp * 16 * TC_LDS;
    const __nv_bfloat16* kb = k + ((size_t)b * nkv + kvh) * s * TC_D;
    const __nv_bfloat16* vb = v + ((size_t)b * nkv + kvh) * s * TC_D;

    // K tile into `ks` (kept), V tile staged through `qs` into each warp's fragments.
    load_tile64(ks, TC_LD, kb, k0, s);
    load_tile64(qs, TC_LD, vb, k0, s);
    __syncthreads();
    FragA kf[4], vf[4];
#pragma unroll
    for (int t = 0; t < 4; t++) {
        wmma::load_matrix_sync(kf[t], ks + warp * 16 * TC_LD + t * 16, TC_LD);
        wmma::load_matrix_sync(vf[t], qs + warp * 16 * TC_LD + t * 16, TC_LD);
    }
    Acc dkf[4], dvf[4];
#pragma unroll
    for (int n = 0; n < 4; n++) {
        wmma::fill_fragment(dkf[n], 0.f);
        wmma::fill_fragment(dvf[n], 0.f);
    }

    for (int h = kvh * rep; h < (kvh + 1) * rep; h++) {
        const size_t bh = (size_t)b * nh + h;
        for (int q0 = k0; q0 < s; q0 += 64) {
            __syncthreads();
            load_tile64(qs, TC_LD, q + bh * s * TC_D, q0, s);
            load_dout_tile64(dos, TC_LD, dout + bh * s * (TC_D + 1), q0, s);
            if (threadIdx.x < 64) {
                int i = q0 + threadIdx.x;
                lse_s[threadIdx.x] = i < s ? fwd[(bh * s + i) * (TC_D + 1) + TC_D] : 0.f;
                delta_s[threadIdx.x] = i < s ? delta[bh * s + i] : 0.f;
            }
            __syncthreads();

            // Sᵀ = K·Qᵀ for the warp's 16 keys.
            rows_times_t(sw, kf, qs, TC_LD);
            __syncwarp();
            float p[32];
#pragma unroll
            for (int e = 0; e < 32; e++) {
                int i = q0 + c0 + e;
                bool ok = key < s && i < s && key <= i;
                p[e] = ok ? expf(sw[r * TC_LDS + c0 + e] * scale - lse_s[c0 + e]) : 0.f;
                pts[(warp * 16 + r) * TC_LD + c0 + e] = __float2bfloat16(p[e]);
            }
            __syncwarp();
            // dV += Pᵀ·dO; dPᵀ = V·dOᵀ.
#pragma unroll
            for (int n = 0; n < 4; n++)
                mma64<wmma::row_major, wmma::row_major>(dvf[n], pts + warp * 16 * TC_LD, TC_LD, 16,
                                                        dos + n * 16, TC_LD, 16 * TC_LD);
            rows_times_t(sw, vf, dos, TC_LD);
            __syncwarp();
#pragma unroll
            for (int e = 0; e < 32; e++) {
                float ds = p[e] * (sw[r * TC_LDS + c0 + e] - delta_s[c0 + e]);
                pts[(warp * 16 + r) * TC_LD + c0 + e] = __float2bfloat16(ds);
            }
            __syncwarp();
            // dK += dSᵀ·Q (scaled at the end).
#pragma unroll
            for (int n = 0; n < 4; n++)
                mma64<wmma::row_major, wmma::row_major>(dkf[n], pts + warp * 16 * TC_LD, TC_LD, 16,
                                                        qs + n * 16, TC_LD, 16 * TC_LD);
        }
    }
    // dK (scaled) and dV of the warp's 16 keys.
    __syncwarp();
    const size_t kvrow = ((size_t)b * nkv + kvh) * s;
    store_rows(sw, dkf);
    __syncwarp();
    if (key < s) {
#pragma unroll
        for (int e = 0; e < 32; e++) dk[(kvrow + key) * TC_D + c0 + e] = scale * sw[r * TC_LDS + c0 + e];
    }
    __syncwarp();
    store_rows(sw, dvf);
    __syncwarp();
    if (key < s) {
#pragma unroll
        for (int e = 0; e < 32; e++) dv[(kvrow + key) * TC_D + c0 + e] = sw[r * TC_LDS + c0 + e];
    }
}

// The backward's dQ on tensor cores (bf16 inputs, head size 64), without atomics: a block takes
// 64 query rows of one head (4 warps, 16 rows each) and walks over the key tiles they can see,
// rebuilding P from the forward's log-sum-exp: dP = dO·Vᵀ, dS = P∘(dP − Δ), dQ += scale·dS·K.
extern "C" __global__ void attn_bwd_dq_tc_bf16(const __nv_bfloat16* q, const __nv_bfloat16* k,
                                               const __nv_bfloat16* v, const float* fwd,
                                               const float* dout, const float* delta, float* dq,
                                               int nh, int nkv, int s, float scale) {
    using namespace nvcuda;
    __shared__ __align__(32) __nv_bfloat16 ks[64 * TC_D];
    __shared__ __align__(32) __nv_bfloat16 vs[64 * TC_D];
    __shared__ __align__(32) float ss[4][16 * TC_LDS];
    __shared__ __align__(32) __nv_bfloat16 ps[4][16 * TC_LDP];
    const int b = blockIdx.z, h = blockIdx.y, q0 = blockIdx.x * 64;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int kvh = h / (nh / nkv);
    const size_t bh = (size_t)b * nh + h;
    const __nv_bfloat16* kb = k + ((size_t)b * nkv + kvh) * s * TC_D;
    const __nv_bfloat16* vb = v + ((size_t)b * nkv + kvh) * s * TC_D;

    // This warp's rows of Q and of dO (rounded to bf16), staged through `ks`, as fragments.
    FragA qf[4], df[4];
    load_tile64(ks, TC_D, q + bh * s * TC_D, q0, s);
    __syncthreads();
#pragma unroll
    for (int t = 0; t < 4; t++) wmma::load_matrix_sync(qf[t], ks + warp * 16 * TC_D + t * 16, TC_D);
    __syncthreads();
    load_dout_tile64(ks, TC_D, dout + bh * s * (TC_D + 1), q0, s);
    __syncthreads();
#pragma unroll
    for (int t = 0; t < 4; t++) wmma::load_matrix_sync(df[t], ks + warp * 16 * TC_D + t * 16, TC_D);

    const int r = lane >> 1, c0 = (lane & 1) * 32;
    const int i = q0 + warp * 16 + r;  // this lane's query row
    const int warp_last = q0 + warp * 16 + 15;
    const float lse = i < s ? fwd[(bh * s + i) * (TC_D + 1) + TC_D] : 0.f;
    const float dl = i < s ? delta[bh * s + i] : 0.f;
    float* sw = ss[warp];
    __nv_bfloat16* pw = ps[warp];
    Acc dqf[4];
#pragma unroll
    for (int n = 0; n < 4; n++) wmma::fill_fragment(dqf[n], 0.f);

    const int kend = min(s, q0 + 64);
    for (int k0 = 0; k0 < kend; k0 += 64) {
        __syncthreads();
        load_tile64(ks, TC_D, kb, k0, s);
        load_tile64(vs, TC_D, vb, k0, s);
        __syncthreads();
        if (k0 > warp_last) continue;  // every key of the tile is after this warp's rows
        // S = Q·Kᵀ, then P.
        rows_times_t(sw, qf, ks, TC_D);
        __syncwarp();
        float p[32];
#pragma unroll
        for (int e = 0; e < 32; e++) {
            int j = k0 + c0 + e;
            bool ok = j <= i && j < s && i < s;
            p[e] = ok ? expf(sw[r * TC_LDS + c0 + e] * scale - lse) : 0.f;
        }
        __syncwarp();
        // dP = dO·Vᵀ, then dS.
        rows_times_t(sw, df, vs, TC_D);
        __syncwarp();
#pragma unroll
        for (int e = 0; e < 32; e++)
            pw[r * TC_LDP + c0 + e] = __float2bfloat16(p[e] * (sw[r * TC_LDS + c0 + e] - dl));
        __syncwarp();
        // dQ += dS·K.
#pragma unroll
        for (int n = 0; n < 4; n++)
            mma64<wmma::row_major, wmma::row_major>(dqf[n], pw, TC_LDP, 16, ks + n * 16, TC_D,
                                                    16 * TC_D);
        __syncwarp();
    }
    store_rows(sw, dqf);
    __syncwarp();
    if (i < s) {
#pragma unroll
        for (int e = 0; e < 32; e++) dq[(bh * s + i) * TC_D + c0 + e] = scale * sw[r * TC_LDS + c0 + e];
    }
}
