// Helpers shared by the project's CUDA kernels (included by decode.cu, attention.cu, layers.cu).
#pragma once

#include <cuda_bf16.h>

// Loads and stores of f32 or bf16 activations, as f32.
__device__ __forceinline__ float ld(const float* p) { return *p; }
__device__ __forceinline__ float ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(__nv_bfloat16* p, float v) { *p = __float2bfloat16(v); }

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum (or with MAX, maximum) over the block; every thread gets it. `red` holds 32 floats.
template <bool MAX>
__device__ float block_reduce(float v, float* red) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = MAX ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) red[w] = v;
    __syncthreads();
    float t = lane < (int)(blockDim.x >> 5) ? red[lane] : (MAX ? -INFINITY : 0.f);
    return MAX ? warp_max(t) : warp_sum(t);
}

__device__ float block_sum(float v, float* red) { return block_reduce<false>(v, red); }

__device__ float block_max(float v, float* red) { return block_reduce<true>(v, red); }
