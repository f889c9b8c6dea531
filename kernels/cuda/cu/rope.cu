// Rotary position embedding, DeepSeek-V3 style (reference kernels/src/cpu/rope.rs): rows laid
// out [tokens, heads, row_len], the rope part of a row the channels [offset, offset + d_rope),
// rotated as interleaved pairs (2i, 2i+1) by the angle of position t % seq from the table
// cos, sin: [max_pos, d_rope / 2] row-major. In place; the backward rotates by the opposite
// angle. One thread per pair, grid-stride over tokens · heads · d_rope/2. The launcher checks
// that every position (< min(tokens, seq)) is inside the table.

DEVICE void rope_apply(const float* __restrict__ cos, const float* __restrict__ sin, int d_rope,
                       float* __restrict__ x, long long tokens, int seq, int heads, int row_len,
                       int offset, bool inverse) {
    int half = d_rope / 2;
    if (half <= 0) return;
    long long total = tokens * heads * half;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        long long row = i / half;  // token · heads + head
        int p = (int)(i - row * half);
        long long t = row / heads;
        int pos = (int)(t % seq);
        float c = cos[(long long)pos * half + p];
        float s = sin[(long long)pos * half + p];
        if (inverse) s = -s;
        float* v = x + row * row_len + offset + 2 * p;
        float x0 = v[0], x1 = v[1];
        v[0] = x0 * c - x1 * s;
        v[1] = x0 * s + x1 * c;
    }
}

// Launch: grid (min(ceil(tokens · heads · (d_rope/2) / 256), 65535)), block 256, dynamic shared 0.
KERNEL void rope_fwd_f32(const float* __restrict__ cos, const float* __restrict__ sin, int d_rope,
                         float* __restrict__ x, long long tokens, int seq, int heads, int row_len,
                         int offset) {
    rope_apply(cos, sin, d_rope, x, tokens, seq, heads, row_len, offset, false);
}

// Launch: as rope_fwd_f32.
KERNEL void rope_bwd_f32(const float* __restrict__ cos, const float* __restrict__ sin, int d_rope,
                         float* __restrict__ dx, long long tokens, int seq, int heads, int row_len,
                         int offset) {
    rope_apply(cos, sin, d_rope, dx, tokens, seq, heads, row_len, offset, true);
}
