// Kernels of the hand-written training layer on CUDA (see `src/llm/cuda_train.rs`): LoRA
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

// The fused q/k/v projection's output y [b·s, (nh + 2·nkv)·64] (token-major, bias not yet
// added) to q [b, nh, s, 64] and k, v [b, nkv, s, 64], adding the biases and rotating q and k
// (rotate-half RoPE, tables [s, 32]). One thread per (token, head, pair).
extern "C" __global__ void qkv_split_bf16(const __nv_bfloat16* y, const float* bq,
                                          const float* bk, const float* bv, const float* cos_t,
                                          const float* sin_t, __nv_bfloat16* q,
                                          __nv_bfloat16* k, __nv_bfloat16* v, int b, int s,
                                          int nh, int nkv) {
    const int D = 64, H = 32;
    int heads = nh + 2 * nkv;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)b * s * heads * H;
    if (idx >= total) return;
    int j = idx % H;
    int h = (idx / H) % heads;
    size_t tok = idx / ((size_t)H * heads);
    int t = tok % s, bi = tok / s;
    const __nv_bfloat16* row = y + tok * heads * D + (size_t)h * D;
    float x1 = ld(row + j), x2 = ld(row + j + H);
    __nv_bfloat16* out;
    if (h < nh) {
        x1 += bq[h * D + j];
        x2 += bq[h * D + j + H];
        out = q + (((size_t)bi * nh + h) * s + t) * D;
    } else if (h < nh + nkv) {
        int hk = h - nh;
        x1 += bk[hk * D + j];
        x2 += bk[hk * D + j + H];
        out = k + (((size_t)bi * nkv + hk) * s + t) * D;
    } else {
        int hv = h - nh - nkv;
        x1 += bv[hv * D + j];
        x2 += bv[hv * D + j + H];
        out = v + (((size_t)bi * nkv + hv) * s + t) * D;
        st(out + j, x1);
        st(out + j + H, x2);
        return;
    }
    float c = cos_t[(size_t)t * H + j], sn = sin_t[(size_t)t * H + j];
    st(out + j, x1 * c - x2 * sn);
    st(out + j + H, x2 * c + x1 * sn);
}

// The backward of `qkv_split_bf16`: dq [b, nh, s, 64] and dk, dv [b, nkv, s, 64] (f32, from the
// attention backward) to dy [b·s, (nh + 2·nkv)·64] bf16, rotating dq and dk back.
extern "C" __global__ void qkv_merge_bf16(const float* dq, const float* dk, const float* dv,
                                          const float* cos_t, const float* sin_t,
                                          __nv_bfloat16* dy, int b, int s, int nh, int nkv) {
    const int D = 64, H = 32;
    int heads = nh + 2 * nkv;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)b * s * heads * H;
    if (idx >= total) return;
    int j = idx % H;
    int h = (idx / H) % heads;
    size_t tok = idx / ((size_t)H * heads);
    int t = tok % s, bi = tok / s;
    __nv_bfloat16* row = dy + tok * heads * D + (size_t)h * D;
    const float* src;
    bool rotate = true;
    if (h < nh) {
        src = dq + (((size_t)bi * nh + h) * s + t) * D;
    } else if (h < nh + nkv) {
        src = dk + (((size_t)bi * nkv + (h - nh)) * s + t) * D;
    } else {
        src = dv + (((size_t)bi * nkv + (h - nh - nkv)) * s + t) * D;
        rotate = false;
    }
    float g1 = src[j], g2 = src[j + H];
    if (rotate) {
        float c = cos_t[(size_t)t * H + j], sn = sin_t[(size_t)t * H + j];
        float a = g1 * c + g2 * sn, bb = g2 * c - g1 * sn;
        g1 = a;
        g2 = bb;
    }
    st(row + j, g1);
    st(row + j + H, g2);
}

// Attention's output o [b, nh, s, 65] (f32, log-sum-exp in the last column) to token-major
// y [b·s, nh·64] bf16, the o-projection's input.
extern "C" __global__ void heads_to_tokens_bf16(const float* o, __nv_bfloat16* y, int b, int s,
                                                int nh) {
    const int D = 64;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)b * s * nh * D;
    if (idx >= total) return;
    int e = idx % D;
    int h = (idx / D) % nh;
    size_t tok = idx / ((size_t)D * nh);
    int t = tok % s, bi = tok / s;
    st(y + idx, o[(((size_t)bi * nh + h) * s + t) * (D + 1) + e]);
}

// The gradient of that move: token-major g [b·s, nh·64] bf16 to [b, nh, s, 65] f32 (the last
// column is left as it is: zero).
extern "C" __global__ void tokens_to_heads_bf16(const __nv_bfloat16* g, float* o, int b, int s,
                                                int nh) {
    const int D = 64;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)b * s * nh * D;
    if (idx >= total) return;
    int e = idx % D;
    int h = (idx / D) % nh;
    size_t tok = idx / ((size_t)D * nh);
    int t = tok % s, bi = tok / s;
    o[(((size_t)bi * nh + h) * s + t) * (D + 1) + e] = ld(g + idx);
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
