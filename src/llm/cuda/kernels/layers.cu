// Fused RMSNorm, RoPE and SwiGLU for training on CUDA, forward and backward (see
// `src/llm/cuda/layers.rs`). Activations f32 or bf16, arithmetic in f32.

#include <cuda_bf16.h>
#include <stdint.h>

#include "common.cuh"

// y = x · rsqrt(mean(x²) + eps) · a, one block per row of n.
template <typename T>
__device__ void rms_fwd(const T* x, const float* a, T* y, int n, float eps) {
    __shared__ float red[32];
    size_t base = (size_t)blockIdx.x * n;
    float ss = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = ld(x + base + i);
        ss += v * v;
    }
    float r = rsqrtf(block_sum(ss, red) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) st(y + base + i, ld(x + base + i) * r * a[i]);
}

// dx = r·a·g − x·r³·Σ(a·g·x)/n, with r = rsqrt(mean(x²) + eps); with ACC added to dx.
template <typename T, bool ACC = false>
__device__ void rms_bwd(const T* x, const float* a, const T* g, T* dx, int n, float eps) {
    __shared__ float red[32];
    size_t base = (size_t)blockIdx.x * n;
    float ss = 0.f, su = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = ld(x + base + i);
        ss += v * v;
        su += a[i] * ld(g + base + i) * v;
    }
    ss = block_sum(ss, red);
    su = block_sum(su, red);
    float r = rsqrtf(ss / (float)n + eps);
    float k = r * r * r * su / (float)n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float d = r * a[i] * ld(g + base + i) - ld(x + base + i) * k;
        st(dx + base + i, ACC ? ld(dx + base + i) + d : d);
    }
}

// Rotary embedding, rotate-half layout (Qwen2): x [rows = b·h, s, d]; for pair j < d/2 at
// position t: y_j = x_j·cos − x_{j+d/2}·sin, y_{j+d/2} = x_{j+d/2}·cos + x_j·sin, with
// `sign` = -1 for the backward (the transpose of a rotation is the rotation by −θ).
template <typename T>
__device__ void rope(const T* x, const float* cos_t, const float* sin_t, T* y, int rows, int s,
                     int d, float sign) {
    int half = d / 2;
    size_t total = (size_t)rows * s * half;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int j = idx % half;
    size_t rt = idx / half;  // row·s + t
    int t = rt % s;
    size_t base = rt * d;
    float c = cos_t[(size_t)t * half + j], sn = sign * sin_t[(size_t)t * half + j];
    float x1 = ld(x + base + j), x2 = ld(x + base + j + half);
    st(y + base + j, x1 * c - x2 * sn);
    st(y + base + j + half, x2 * c + x1 * sn);
}

// y = silu(g)·u.
template <typename T>
__device__ void swiglu(const T* g, const T* u, T* y, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gv = ld(g + i);
    st(y + i, gv / (1.f + expf(-gv)) * ld(u + i));
}

// dg = dy·u·σ(g)·(1 + g·(1 − σ(g))), du = dy·silu(g); out = [dg | du].
template <typename T>
__device__ void swiglu_bwd(const T* g, const T* u, const T* dy, T* out, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gv = ld(g + i), uv = ld(u + i), d = ld(dy + i);
    float sg = 1.f / (1.f + expf(-gv));
    st(out + i, d * uv * sg * (1.f + gv * (1.f - sg)));
    st(out + n + i, d * gv * sg);
}

#define LAYER_KERNELS(T, SUF)                                                                  \
    extern "C" __global__ void rms_fwd_##SUF(const T* x, const float* a, T* y, int n,          \
                                            float eps) {                                       \
        rms_fwd<T>(x, a, y, n, eps);                                                           \
    }                                                                                          \
    extern "C" __global__ void rms_bwd_##SUF(const T* x, const float* a, const T* g, T* dx,    \
                                            int n, float eps) {                                \
        rms_bwd<T>(x, a, g, dx, n, eps);                                                       \
    }                                                                                          \
    extern "C" __global__ void rms_bwd_acc_##SUF(const T* x, const float* a, const T* g,       \
                                                T* dx, int n, float eps) {                     \
        rms_bwd<T, true>(x, a, g, dx, n, eps);                                                 \
    }                                                                                          \
    extern "C" __global__ void rope_##SUF(const T* x, const float* c, const float* s, T* y,    \
                                         int rows, int seq, int d, float sign) {               \
        rope<T>(x, c, s, y, rows, seq, d, sign);                                               \
    }                                                                                          \
    extern "C" __global__ void swiglu_##SUF(const T* g, const T* u, T* y, size_t n) {          \
        swiglu<T>(g, u, y, n);                                                                 \
    }                                                                                          \
    extern "C" __global__ void swiglu_bwd_##SUF(const T* g, const T* u, const T* dy, T* out,   \
                                               size_t n) {                                     \
        swiglu_bwd<T>(g, u, dy, out, n);                                                       \
    }

LAYER_KERNELS(float, f32)
LAYER_KERNELS(__nv_bfloat16, bf16)
