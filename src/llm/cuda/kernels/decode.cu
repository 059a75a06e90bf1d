// Fused kernels for single-sequence decode on CUDA (see `src/llm/cuda/decode.rs`).
//
// One decode step is: embed, then per layer qkv_rope -> attn_chunk_HD -> attn_out (combine and
// o-projection) -> gate_up -> matvec_add (down), then head_argmax -> argmax_final. Activations
// and the KV cache are f32, weights f16 (row-major [out, in]), every dot product accumulates in
// f32. The position of the token being decoded lives in device memory (`pos`), so the whole step
// has static launch shapes and can be captured once as a CUDA graph and replayed.

#include <cuda_fp16.h>
#include <stdint.h>

#include "common.cuh"

#define CHUNK 256

// xs = rms_norm(x) * g, in shared memory, for the whole block.
__device__ void load_normed(const float* x, const float* g, float eps, int n, float* xs,
                            float* red) {
    float ss = 0.f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = x[i];
        xs[i] = v;
        ss += v * v;
    }
    float r = rsqrtf(block_sum(ss, red) / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) xs[i] = xs[i] * r * g[i];
    __syncthreads();
}

// One warp: dot product of an f16 row (n % 8 == 0, 16-byte aligned) with xs (shared, f32).
// Every lane gets the result.
__device__ __forceinline__ float row_dot(const __half* w, const float* xs, int n) {
    int lane = threadIdx.x & 31;
    const uint4* w4 = reinterpret_cast<const uint4*>(w);
    const float4* x4 = reinterpret_cast<const float4*>(xs);
    float acc = 0.f;
#pragma unroll 4
    for (int c = lane; c < (n >> 3); c += 32) {
        uint4 u = __ldg(w4 + c);
        const __half2* h = reinterpret_cast<const __half2*>(&u);
        float4 xa = x4[2 * c], xb = x4[2 * c + 1];
        float2 f0 = __half22float2(h[0]), f1 = __half22float2(h[1]);
        float2 f2 = __half22float2(h[2]), f3 = __half22float2(h[3]);
        acc += f0.x * xa.x + f0.y * xa.y + f1.x * xa.z + f1.y * xa.w;
        acc += f2.x * xb.x + f2.y * xb.y + f3.x * xb.z + f3.y * xb.w;
    }
    return warp_sum(acc);
}

// x = embed[token]
extern "C" __global__ void embed_row(const float* table, const unsigned* token, int hidden,
                                     float* x) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < hidden) x[i] = table[(size_t)token[0] * hidden + i];
}

// q, k, v = rms_norm(x)·Wqkvᵀ + b; RoPE on q and k; k and v written to the cache at `pos`.
// One warp per rotary pair of rows of one head (q heads, then k heads, then v heads).
extern "C" __global__ void qkv_rope(const float* x, const float* g, float eps, int hidden,
                                    const __half* w, const float* bias, int n_head, int n_kv,
                                    int hd, int neox, const float* cos_t, const float* sin_t,
                                    const unsigned* pos_p, int max_pos, float* q_out, float* kc,
                                    float* vc) {
    extern __shared__ float xs[];
    __shared__ float red[32];
    load_normed(x, g, eps, hidden, xs, red);
    int pos = (int)pos_p[0];
    int half = hd / 2;
    int units = (n_head + 2 * n_kv) * half;
    int lane = threadIdx.x & 31;
    int u = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (u >= units) return;
    int head = u / half, j = u % half;
    int a = neox ? j : 2 * j, b = neox ? j + half : 2 * j + 1;
    int row = head * hd;
    float ya = row_dot(w + (size_t)(row + a) * hidden, xs, hidden) + bias[row + a];
    float yb = row_dot(w + (size_t)(row + b) * hidden, xs, hidden) + bias[row + b];
    if (lane != 0) return;
    if (head < n_head + n_kv) {
        float c = cos_t[(size_t)pos * half + j], s = sin_t[(size_t)pos * half + j];
        float ra = ya * c - yb * s, rb = yb * c + ya * s;
        if (head < n_head) {
            q_out[head * hd + a] = ra;
            q_out[head * hd + b] = rb;
        } else {
            float* k = kc + ((size_t)(head - n_head) * max_pos + pos) * hd;
            k[a] = ra;
            k[b] = rb;
        }
    } else {
        float* v = vc + ((size_t)(head - n_head - n_kv) * max_pos + pos) * hd;
        v[a] = ya;
        v[b] = yb;
    }
}

// Attention of one query head over one chunk of CHUNK keys (split-K, "flash decoding"): writes
// the chunk's max score, sum of exponentials and unnormalised output. Block: CHUNK threads.
// HD (the head size) is a template parameter so that the loops over it unroll: every load of a
// key row and of a value block is in flight at once instead of one after another.
template <int HD>
__device__ void attn_chunk(const float* q, const float* kc, const float* vc,
                           const unsigned* pos_p, int n_head, int n_kv, int max_pos, float scale,
                           float* part_o, float* part_ms) {
    constexpr int D4 = HD / 4;          // float4s per row
    constexpr int GROUPS = CHUNK / D4;  // key groups of the value pass
    __shared__ float4 qs[D4];
    __shared__ float p[CHUNK];
    __shared__ float4 os[CHUNK];
    __shared__ float red[32];
    int head = blockIdx.x, c = blockIdx.y, nc = gridDim.y;
    int len = (int)pos_p[0] + 1;
    int start = c * CHUNK;
    size_t pidx = (size_t)head * nc + c;
    if (start >= len) {
        if (threadIdx.x == 0) {
            part_ms[2 * pidx] = -INFINITY;
            part_ms[2 * pidx + 1] = 0.f;
        }
        return;
    }
    int end = min(len, start + CHUNK);
    int kvh = head / (n_head / n_kv);
    if (threadIdx.x < D4) {
        float4 v = reinterpret_cast<const float4*>(q + (size_t)head * HD)[threadIdx.x];
        qs[threadIdx.x] = make_float4(v.x * scale, v.y * scale, v.z * scale, v.w * scale);
    }
    __syncthreads();
    int k = start + threadIdx.x;
    float s = -INFINITY;
    if (k < end) {
        const float4* kr = reinterpret_cast<const float4*>(kc + ((size_t)kvh * max_pos + k) * HD);
        float4 kv[D4];
#pragma unroll
        for (int i = 0; i < D4; i++) kv[i] = kr[i];
        float acc = 0.f;
#pragma unroll
        for (int i = 0; i < D4; i++) {
            float4 qv = qs[i];
            acc += kv[i].x * qv.x + kv[i].y * qv.y + kv[i].z * qv.z + kv[i].w * qv.w;
        }
        s = acc;
    }
    float m = block_max(s, red);
    float e = k < end ? expf(s - m) : 0.f;
    p[threadIdx.x] = e;
    float sum = block_sum(e, red);
    // Value pass: thread (g, d4) sums keys g, g + GROUPS, ... of its float4 of the output.
    int d4 = threadIdx.x % D4, g = threadIdx.x / D4;
    const float4* vb = reinterpret_cast<const float4*>(vc + (size_t)kvh * max_pos * HD);
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int kk = start + g; kk < end; kk += GROUPS) {
        float w = p[kk - start];
        float4 v = vb[(size_t)kk * D4 + d4];
        acc.x += w * v.x;
        acc.y += w * v.y;
        acc.z += w * v.z;
        acc.w += w * v.w;
    }
    os[threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.x < D4) {
        float4 t = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int g2 = 0; g2 < GROUPS; g2++) {
            float4 v = os[g2 * D4 + threadIdx.x];
            t.x += v.x;
            t.y += v.y;
            t.z += v.z;
            t.w += v.w;
        }
        reinterpret_cast<float4*>(part_o + pidx * HD)[threadIdx.x] = t;
    }
    if (threadIdx.x == 0) {
        part_ms[2 * pidx] = m;
        part_ms[2 * pidx + 1] = sum;
    }
}

extern "C" __global__ void attn_chunk_64(const float* q, const float* kc, const float* vc,
                                         const unsigned* pos_p, int n_head, int n_kv,
                                         int max_pos, float scale, float* part_o,
                                         float* part_ms) {
    attn_chunk<64>(q, kc, vc, pos_p, n_head, n_kv, max_pos, scale, part_o, part_ms);
}

extern "C" __global__ void attn_chunk_128(const float* q, const float* kc, const float* vc,
                                          const unsigned* pos_p, int n_head, int n_kv,
                                          int max_pos, float scale, float* part_o,
                                          float* part_ms) {
    attn_chunk<128>(q, kc, vc, pos_p, n_head, n_kv, max_pos, scale, part_o, part_ms);
}

// x += Wo·attention, where the attention output is first combined from the chunks of each head:
// out[head] = Σ e^(m_c - M) o_c / Σ e^(m_c - M) s_c. One warp per output row.
extern "C" __global__ void attn_out(const float* part_o, const float* part_ms,
                                    const unsigned* pos_p, int n_head, int hd, int nc_max,
                                    const __half* w, int n, float* y) {
    extern __shared__ float xs[];
    int len = (int)pos_p[0] + 1;
    int chunks = (len + CHUNK - 1) / CHUNK;
    for (int i = threadIdx.x; i < n_head * hd; i += blockDim.x) {
        int head = i / hd, d = i % hd;
        const float* ms = part_ms + (size_t)head * nc_max * 2;
        const float* po = part_o + (size_t)head * nc_max * hd;
        float mx = -INFINITY;
        for (int c = 0; c < chunks; c++) mx = fmaxf(mx, ms[2 * c]);
        float den = 0.f, num = 0.f;
        for (int c = 0; c < chunks; c++) {
            float wt = expf(ms[2 * c] - mx);
            den += wt * ms[2 * c + 1];
            num += wt * po[(size_t)c * hd + d];
        }
        xs[i] = num / den;
    }
    __syncthreads();
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= n) return;
    float d = row_dot(w + (size_t)row * n_head * hd, xs, n_head * hd);
    if ((threadIdx.x & 31) == 0) y[row] += d;
}

// y += W·a (W: [n, k] f16). One warp per row.
extern "C" __global__ void matvec_add(const __half* w, const float* a, int k, int n, float* y) {
    extern __shared__ float xs[];
    for (int i = threadIdx.x; i < k; i += blockDim.x) xs[i] = a[i];
    __syncthreads();
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= n) return;
    float d = row_dot(w + (size_t)row * k, xs, k);
    if ((threadIdx.x & 31) == 0) y[row] += d;
}

// h = silu(rms_norm(x)·Wgᵀ) * (rms_norm(x)·Wuᵀ). One warp per output row.
extern "C" __global__ void gate_up(const float* x, const float* g, float eps, int hidden,
                                   const __half* wg, const __half* wu, int inter, float* h) {
    extern __shared__ float xs[];
    __shared__ float red[32];
    load_normed(x, g, eps, hidden, xs, red);
    int row = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= inter) return;
    float gv = row_dot(wg + (size_t)row * hidden, xs, hidden);
    float uv = row_dot(wu + (size_t)row * hidden, xs, hidden);
    if ((threadIdx.x & 31) == 0) h[row] = gv / (1.f + expf(-gv)) * uv;
}

#define HEAD_ROWS 8

// logits = rms_norm(x)·Wᵀ, and each block's best (value, row). Each warp does HEAD_ROWS rows.
extern "C" __global__ void head_argmax(const float* x, const float* g, float eps, int hidden,
                                       const __half* w, int vocab, float* logits, float* cand_v,
                                       unsigned* cand_i) {
    extern __shared__ float xs[];
    __shared__ float red[32];
    __shared__ float bv[32];
    __shared__ unsigned bi[32];
    load_normed(x, g, eps, hidden, xs, red);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float best = -INFINITY;
    unsigned besti = 0xffffffffu;
    int base = (blockIdx.x * (blockDim.x >> 5) + warp) * HEAD_ROWS;
    for (int r = 0; r < HEAD_ROWS; r++) {
        int row = base + r;
        if (row >= vocab) break;
        float d = row_dot(w + (size_t)row * hidden, xs, hidden);
        if (lane == 0) logits[row] = d;
        if (d > best) {
            best = d;
            besti = row;
        }
    }
    if (lane == 0) {
        bv[warp] = best;
        bi[warp] = besti;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int i = 1; i < (int)(blockDim.x >> 5); i++) {
            if (bv[i] > best || (bv[i] == best && bi[i] < besti)) {
                best = bv[i];
                besti = bi[i];
            }
        }
        cand_v[blockIdx.x] = best;
        cand_i[blockIdx.x] = besti;
    }
}

// The best of the candidates: res[0] = token, res[1] = its logit's bits; the token is also the
// next step's input, and the position advances. One block.
extern "C" __global__ void argmax_final(const float* cand_v, const unsigned* cand_i, int n,
                                        unsigned* res, unsigned* token, unsigned* pos_p) {
    __shared__ float sv[1024];
    __shared__ unsigned si[1024];
    float best = -INFINITY;
    unsigned besti = 0xffffffffu;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = cand_v[i];
        unsigned id = cand_i[i];
        if (v > best || (v == best && id < besti)) {
            best = v;
            besti = id;
        }
    }
    sv[threadIdx.x] = best;
    si[threadIdx.x] = besti;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float v = sv[threadIdx.x + s];
            unsigned id = si[threadIdx.x + s];
            if (v > sv[threadIdx.x] || (v == sv[threadIdx.x] && id < si[threadIdx.x])) {
                sv[threadIdx.x] = v;
                si[threadIdx.x] = id;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        unsigned t = si[0] == 0xffffffffu ? 0u : si[0];
        res[0] = t;
        res[1] = __float_as_uint(sv[0]);
        token[0] = t;
        pos_p[0] += 1;
    }
}
