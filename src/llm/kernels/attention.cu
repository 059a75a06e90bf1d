// Fused causal attention for training on CUDA, forward and backward (see
// `src/llm/cuda_attention.rs`), in the manner of FlashAttention-2: the [seq, seq] score matrix
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
