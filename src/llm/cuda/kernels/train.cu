// Kernels of the hand-written training layer on CUDA (see `src/llm/cuda/train_layer.rs`): LoRA
// dropout with masks drawn from a counter-based hash (so the backward pass redraws exactly the
// forward's mask instead of storing it), the moves between token-major projections and the
// head-major layout attention reads (with bias and RoPE folded in), and AdamW. Activations bf16,
// arithmetic f32.

#include <cuda_bf16.h>
#include <stdint.h>

#include "common.cuh"

// Uniform in [0, 1) for element `i` of the mask `seed` (SplitMix64's finaliser).
__device__ __forceinline__ float hash_uniform(uint64_t seed, uint64_t i) {
    uint64_t z = seed ^ ((i + 1) * 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

// y = x · keep / (1 − p), keep = uniform ≥ p.
template <typename T>
__device__ void dropout(const T* x, T* y, size_t n, uint64_t seed, float p) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float keep = hash_uniform(seed, i) >= p ? 1.f / (1.f - p) : 0.f;
    st(y + i, ld(x + i) * keep);
}

extern "C" __global__ void dropout_f32(const float* x, float* y, size_t n, uint64_t seed,
                                       float p) {
    dropout(x, y, n, seed, p);
}

extern "C" __global__ void dropout_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, size_t n,
                                        uint64_t seed, float p) {
    dropout(x, y, n, seed, p);
}

// acc += d · keep / (1 − p): the backward of `dropout_bf16` added into a gradient.
extern "C" __global__ void dropout_add_bf16(const __nv_bfloat16* d, __nv_bfloat16* acc, size_t n,
                                            uint64_t seed, float p) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float keep = hash_uniform(seed, i) >= p ? 1.f / (1.f - p) : 0.f;
    st(acc + i, ld(acc + i) + ld(d + i) * keep);
}

// Where thread `idx` of the q/k/v kernels works: one (token, head, rotation pair) of the fused
// projection's token-major row, and the head-major row [b, heads of its kind, s, 64] it maps to.
struct QkvSlot {
    size_t tok;    // token b·s + t
    int t, j;      // position, pair (0..31)
    int kind;      // 0 q, 1 k, 2 v
    size_t head;   // row of the head-major tensor of that kind
    int h;         // head within the fused row (0..nh + 2·nkv)
};

__device__ __forceinline__ QkvSlot qkv_slot(size_t idx, int s, int nh, int nkv) {
    const int H = 32;
    int heads = nh + 2 * nkv;
    QkvSlot q;
    q.j = idx % H;
    q.h = (idx / H) % heads;
    q.tok = idx / ((size_t)H * heads);
    q.t = q.tok % s;
    size_t bi = q.tok / s;
    int hk = q.h < nh ? q.h : q.h < nh + nkv ? q.h - nh : q.h - nh - nkv;
    q.kind = q.h < nh ? 0 : q.h < nh + nkv ? 1 : 2;
    q.head = (bi * (q.kind == 0 ? nh : nkv) + hk) * s + q.t;
    return q;
}

// The fused q/k/v projection's output y [b·s, (nh + 2·nkv)·64] (token-major, bias not yet
// added) to q [b, nh, s, 64] and k, v [b, nkv, s, 64], adding the biases and rotating q and k
// (rotate-half RoPE, tables [s, 32]). One thread per (token, head, pair).
extern "C" __global__ void qkv_split_bf16(const __nv_bfloat16* y, const float* bq,
                                          const float* bk, const float* bv, const float* cos_t,
                                          const float* sin_t, __nv_bfloat16* q,
                                          __nv_bfloat16* k, __nv_bfloat16* v, int b, int s,
                                          int nh, int nkv) {
    const int D = 64, H = 32;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)b * s * (nh + 2 * nkv) * H) return;
    QkvSlot p = qkv_slot(idx, s, nh, nkv);
    const __nv_bfloat16* row = y + (p.tok * (nh + 2 * nkv) + p.h) * D;
    const float* bias = p.kind == 0 ? bq + p.h * D : p.kind == 1 ? bk + (p.h - nh) * D
                                                                 : bv + (p.h - nh - nkv) * D;
    __nv_bfloat16* out = (p.kind == 0 ? q : p.kind == 1 ? k : v) + p.head * D;
    float x1 = ld(row + p.j) + bias[p.j], x2 = ld(row + p.j + H) + bias[p.j + H];
    if (p.kind < 2) {
        float c = cos_t[(size_t)p.t * H + p.j], sn = sin_t[(size_t)p.t * H + p.j];
        float r1 = x1 * c - x2 * sn, r2 = x2 * c + x1 * sn;
        x1 = r1;
        x2 = r2;
    }
    st(out + p.j, x1);
    st(out + p.j + H, x2);
}

// The backward of `qkv_split_bf16`: dq [b, nh, s, 64] and dk, dv [b, nkv, s, 64] (f32, from the
// attention backward) to dy [b·s, (nh + 2·nkv)·64] bf16, rotating dq and dk back.
extern "C" __global__ void qkv_merge_bf16(const float* dq, const float* dk, const float* dv,
                                          const float* cos_t, const float* sin_t,
                                          __nv_bfloat16* dy, int b, int s, int nh, int nkv) {
    const int D = 64, H = 32;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)b * s * (nh + 2 * nkv) * H) return;
    QkvSlot p = qkv_slot(idx, s, nh, nkv);
    const float* src = (p.kind == 0 ? dq : p.kind == 1 ? dk : dv) + p.head * D;
    __nv_bfloat16* row = dy + (p.tok * (nh + 2 * nkv) + p.h) * D;
    float g1 = src[p.j], g2 = src[p.j + H];
    if (p.kind < 2) {
        float c = cos_t[(size_t)p.t * H + p.j], sn = sin_t[(size_t)p.t * H + p.j];
        float r1 = g1 * c + g2 * sn, r2 = g2 * c - g1 * sn;
        g1 = r1;
        g2 = r2;
    }
    st(row + p.j, g1);
    st(row + p.j + H, g2);
}

// For element `idx` of a token-major [b·s, nh·64] tensor, the offset of the same element in a
// head-major [b, nh, s, 65] one (attention's output with its log-sum-exp column).
__device__ __forceinline__ size_t head_major(size_t idx, int s, int nh) {
    const int D = 64;
    int e = idx % D;
    int h = (idx / D) % nh;
    size_t tok = idx / ((size_t)D * nh);
    size_t t = tok % s, bi = tok / s;
    return ((bi * nh + h) * s + t) * (D + 1) + e;
}

// Attention's output o [b, nh, s, 65] (f32) to token-major y [b·s, nh·64] bf16, the
// o-projection's input.
extern "C" __global__ void heads_to_tokens_bf16(const float* o, __nv_bfloat16* y, int b, int s,
                                                int nh) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)b * s * nh * 64) return;
    st(y + idx, o[head_major(idx, s, nh)]);
}

// The gradient of that move: token-major g [b·s, nh·64] bf16 to [b, nh, s, 65] f32 (the last
// column is left as it is: zero).
extern "C" __global__ void tokens_to_heads_bf16(const __nv_bfloat16* g, float* o, int b, int s,
                                                int nh) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)b * s * nh * 64) return;
    o[head_major(idx, s, nh)] = ld(g + idx);
}

// One AdamW step (decoupled weight decay, bias-corrected moments) on f32 parameters.
extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, size_t n,
                                     float lr, float b1, float b2, float eps, float wd, float c1,
                                     float c2) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i];
    float mi = b1 * m[i] + (1.f - b1) * gi;
    float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float update = (mi / c1) / (sqrtf(vi / c2) + eps);
    p[i] = p[i] * (1.f - lr * wd) - lr * update;
}
