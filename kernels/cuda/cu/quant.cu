// The number formats of the low-precision GEMM operands (references kernels/src/bf16.rs,
// kernels/src/quant.rs with ScaleRounding::Exact and E4M3, kernels/src/cpu/lowp.rs): BF16
// rounding, fine-grained FP8 E4M3 tile quantization (one scale amax / 448 per
// tile_rows × tile_cols tile, edge tiles partial), and the promotion of a limited-precision
// partial sum into an FP32 accumulator. The codecs are common.cuh's.

#define E4M3_MAX 448.0f

// x[i] = round_bf16(x[i]) (round to nearest even, NaN stays NaN).
// Launch: grid (min(ceil(n / 256), 65535)), block 256, dynamic shared 0.
KERNEL void round_bf16_f32(float* __restrict__ x, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        x[i] = round_bf16(x[i]);
}

// y[i] = the BF16 bit pattern of x[i] (round to nearest even, NaN stays NaN): the operands of
// a tensor-core BF16 GEMM.
// Launch: grid (min(ceil(n / 256), 65535)), block 256, dynamic shared 0.
KERNEL void to_bf16_f32(const float* __restrict__ x, unsigned short* __restrict__ y,
                        long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = f32_to_bf16(x[i]);
}

// The BF16 operands of bf16_mma_gemm_f32 (mma.cu), K contiguous, every group in one launch: for
// group g (blockIdx.z) of desc [groups][3] = {src_off, rows, dst_off} (elements), the rows ×
// cols matrix at src + src_off becomes dst[dst_off + o · ld + κ] = f32_to_bf16(op[o][κ]), op the
// matrix itself (k_on_rows 0: outer = rows, K = cols) or its transpose (k_on_rows 1: outer =
// cols, K = rows; through a shared 32 × 32 tile, so that both the reads and the writes are
// contiguous). A group of 0 rows writes nothing; dst past each row's K is left as it is (the
// caller's zeros).
// Launch: grid (ceil(K / 32), min(ceil(outer / 32), 65535), groups), K and outer a group's
// largest; block (32, 8), dynamic shared 0; the blocks stride over outer past 65535 · 32.
KERNEL void to_bf16_rows_f32(const float* __restrict__ src, int cols, int k_on_rows,
                             unsigned short* __restrict__ dst, long long ld,
                             const long long* __restrict__ desc) {
    __shared__ float tile[32][33];
    const long long* d = desc + 3 * (long long)blockIdx.z;
    src += d[0];
    const int rows = (int)d[1];
    dst += d[2];
    const int outer = k_on_rows ? cols : rows, k = k_on_rows ? rows : cols;
    const int k0 = blockIdx.x * 32, tx = threadIdx.x, ty = threadIdx.y;
    if (rows == 0 || k0 >= k) return;
    for (int o0 = blockIdx.y * 32; o0 < outer; o0 += gridDim.y * 32) {
        if (!k_on_rows) {
            for (int i = ty; i < 32; i += 8) {
                int o = o0 + i, j = k0 + tx;
                if (o < outer && j < k) dst[(long long)o * ld + j] = f32_to_bf16(src[(long long)o * cols + j]);
            }
            continue;
        }
        for (int i = ty; i < 32; i += 8) {
            int j = k0 + i, o = o0 + tx;
            if (j < k && o < outer) tile[i][tx] = src[(long long)j * cols + o];
        }
        __syncthreads();
        for (int i = ty; i < 32; i += 8) {
            int o = o0 + i, j = k0 + tx;
            if (o < outer && j < k) dst[(long long)o * ld + j] = f32_to_bf16(tile[tx][i]);
        }
        __syncthreads();  // before the next tile reuses `tile`
    }
}

// The tile (tx, ty) of a rows × cols matrix: its first row and column and its extent.
struct QuantTile {
    int r0, c0, h, w;
};

DEVICE QuantTile tile_at(int tx, int ty, int rows, int cols, int tile_rows, int tile_cols) {
    QuantTile t;
    t.r0 = ty * tile_rows;
    t.c0 = tx * tile_cols;
    t.h = tm_min(tile_rows, rows - t.r0);
    t.w = tm_min(tile_cols, cols - t.c0);
    return t;
}

// The amax of tile t of the [*, cols] matrix src over the block, a non-finite element counting
// as +inf (the tile is bad).
DEVICE float tile_amax(const float* src, int cols, QuantTile t, float* scratch) {
    int count = t.h * t.w;
    float amax = 0.0f;
    for (int e = threadIdx.x; e < count; e += blockDim.x) {
        float v = src[(long long)(t.r0 + e / t.w) * cols + t.c0 + e % t.w];
        amax = fmaxf(amax, tm_isfinite(v) ? fabsf(v) : TM_INF);
    }
    return block_max(amax, scratch);
}

// The scale of a cuBLASLt operand's tile of that amax: amax / 448, or 1 for a zero tile or a bad
// one (whose codes are NaN).
DEVICE float lt_scale(float amax) {
    return amax == 0.0f || amax == TM_INF ? 1.0f : amax / E4M3_MAX;
}

// Each element of the tiles in column blockIdx.x, rows blockIdx.y, blockIdx.y + gridDim.y, …
// of the rows × cols matrix src becomes, at the same place of dst (which may be src),
// e4m3(x / s) · s with s = amax / 448 over its tile: the values an FP8 GEMM computes with. A
// tile whose amax is 0 is copied as is; a tile holding a NaN or an infinity cannot be scaled:
// it becomes NaN and is counted in *bad_tiles (atomicAdd), never silently saturated
// (quant::fake_quantize, Exact rounding, bit for bit). Each thread reads the elements it
// writes, so src == dst is allowed.
DEVICE void fake_quantize_tiles(const float* src, float* dst, int rows, int cols, int tile_rows,
                                int tile_cols, unsigned int* __restrict__ bad_tiles,
                                float* scratch) {
    int tiles_y = (rows + tile_rows - 1) / tile_rows;
    int tx = blockIdx.x;
    for (int ty = blockIdx.y; ty < tiles_y; ty += gridDim.y) {
        QuantTile t = tile_at(tx, ty, rows, cols, tile_rows, tile_cols);
        int count = t.h * t.w;
        float amax = tile_amax(src, cols, t, scratch);
        bool bad = amax == TM_INF;
        if (bad && threadIdx.x == 0) atomicAdd(bad_tiles, 1u);
        float s = amax / E4M3_MAX;
        for (int e = threadIdx.x; e < count; e += blockDim.x) {
            long long at = (long long)(t.r0 + e / t.w) * cols + t.c0 + e % t.w;
            float v = src[at];
            dst[at] = amax == 0.0f ? v : bad ? TM_NAN : e4m3_to_f32(f32_to_e4m3(v / s)) * s;
        }
    }
}

// The rows × cols matrix src fake-quantized into dst (fake_quantize_tiles; in place when
// src == dst).
// Launch: grid (ceil(cols / tile_cols), min(ceil(rows / tile_rows), 65535)), block 256,
// dynamic shared 0 (one block per tile; the blocks stride over the tile rows past 65535).
KERNEL void fp8_fake_quantize_f32(const float* src, float* dst, int rows, int cols,
                                  int tile_rows, int tile_cols,
                                  unsigned int* __restrict__ bad_tiles) {
    __shared__ float scratch[32];
    fake_quantize_tiles(src, dst, rows, cols, tile_rows, tile_cols, bad_tiles, scratch);
}

// The operands of the MoE experts' grouped FP8 GEMM, which the CPU quantizes expert by expert
// (kernels/src/cpu/grouped.rs): group g (blockIdx.z) of offsets [groups + 1] (non-decreasing).
//
// rows:   group g's rows offsets[g] .. offsets[g + 1] of the [*, cols] matrix src, quantized
//         as a matrix of its own (its tiles counted from its first row) into the same rows of
//         dst. A group without rows has nothing to quantize.
// blocks: group g's rows × cols weight block at src + g · src_stride, into dst + g ·
//         dst_stride, only when the group has rows (the CPU does not quantize the weight of
//         an expert without tokens, nor count its tiles).
// Launch: grid (ceil(cols / tile_cols), min(ceil(R / tile_rows), 65535), groups), R the most
// rows of one group's matrix; block 256, dynamic shared 0. src == dst is allowed.
KERNEL void fp8_fake_quantize_rows_f32(const float* src, float* dst,
                                       const int* __restrict__ offsets, int groups, int cols,
                                       int tile_rows, int tile_cols,
                                       unsigned int* __restrict__ bad_tiles) {
    __shared__ float scratch[32];
    const int g = blockIdx.z;
    if (g >= groups) return;
    const long long at = (long long)offsets[g] * cols;
    fake_quantize_tiles(src + at, dst + at, offsets[g + 1] - offsets[g], cols, tile_rows,
                        tile_cols, bad_tiles, scratch);
}

KERNEL void fp8_fake_quantize_blocks_f32(const float* src, long long src_stride, float* dst,
                                         long long dst_stride, const int* __restrict__ offsets,
                                         int groups, int rows, int cols, int tile_rows,
                                         int tile_cols, unsigned int* __restrict__ bad_tiles) {
    __shared__ float scratch[32];
    const int g = blockIdx.z;
    if (g >= groups || offsets[g + 1] == offsets[g]) return;
    fake_quantize_tiles(src + g * src_stride, dst + g * dst_stride, rows, cols, tile_rows,
                        tile_cols, bad_tiles, scratch);
}

// codes [rows, cols] = e4m3(x / s), scales [ceil(rows / tile_rows), ceil(cols / tile_cols)]
// row-major = s = amax / 448 of the tile, where amax ignores NaN; a tile whose amax is 0 or
// infinite gets s = 1 (so infinities saturate to ±448 and NaN gets the NaN code): exactly
// quant::quantize with Exact rounding. Tiles holding a NaN or an infinity are also counted in
// *bad_tiles (atomicAdd), as fp8_fake_quantize_f32 counts them.
// Launch: as fp8_fake_quantize_f32.
KERNEL void fp8_quantize_f32(const float* __restrict__ x, int rows, int cols, int tile_rows,
                             int tile_cols, unsigned char* __restrict__ codes,
                             float* __restrict__ scales, unsigned int* __restrict__ bad_tiles) {
    __shared__ float scratch[32];
    int tiles_x = (cols + tile_cols - 1) / tile_cols;
    int tiles_y = (rows + tile_rows - 1) / tile_rows;
    int tx = blockIdx.x;
    for (int ty = blockIdx.y; ty < tiles_y; ty += gridDim.y) {
        QuantTile t = tile_at(tx, ty, rows, cols, tile_rows, tile_cols);
        int count = t.h * t.w;
        float amax = 0.0f, nan = 0.0f;
        for (int e = threadIdx.x; e < count; e += blockDim.x) {
            float v = x[(long long)(t.r0 + e / t.w) * cols + t.c0 + e % t.w];
            amax = fmaxf(amax, fabsf(v));  // fmaxf ignores NaN, as f32::max
            if (tm_isnan(v)) nan = 1.0f;
        }
        amax = block_max(amax, scratch);
        nan = block_max(nan, scratch);
        bool finite = tm_isfinite(amax);
        float s = amax > 0.0f && finite ? amax / E4M3_MAX : 1.0f;
        if (threadIdx.x == 0) {
            scales[(long long)ty * tiles_x + tx] = s;
            if (!finite || nan != 0.0f) atomicAdd(bad_tiles, 1u);
        }
        for (int e = threadIdx.x; e < count; e += blockDim.x) {
            long long at = (long long)(t.r0 + e / t.w) * cols + t.c0 + e % t.w;
            codes[at] = f32_to_e4m3(x[at] / s);
        }
    }
}

// An operand of cuBLASLt's block-scaled FP8 GEMM (src/fp8.rs), from the rows × cols matrix src
// as stored, contracted along its columns (k_on_rows = 0) or along its rows (k_on_rows = 1):
// op(src) is outer × K. codes [outer][ld] (K contiguous, ld ≥ K: cuBLASLt's transposed operand,
// column-major K × outer; what lies past K, or past outer, is the caller's padding) = e4m3(x / s)
// per tile of tile_outer × 128 (tile_outer 1: a VEC128 scale per outer index and 128 of K; 128:
// a BLK128x128 scale; no other), s = lt_scale(amax): amax / 448 exactly as
// fp8_fake_quantize_f32 computes it, so codes · s are the fake-quantized values bit for bit. A
// tile whose amax is 0 gets s = 1 (its codes are its zeros); a tile holding a NaN or an infinity
// gets NaN codes and s = 1 and is counted in *bad_tiles — it becomes NaN as in the fake
// quantization, never saturated. Tile (to, tk)'s
// scale goes to scales[to · scale_outer + tk · scale_k] (the layout cuBLASLt's scale mode asks
// for, chosen by the caller).
//
// Along the columns, a block quantizes one tile, reading and writing along K (contiguous both
// ways). Along the rows, element (o, j) lies at src[j · cols + o], so a tile's K runs down a
// column: a block takes a panel of LT_PANEL_VEC outer indices (VEC128: that many tiles) or 128
// (one BLK128x128 tile) × 128 of K, reads it a row at a time (a warp's 32 lanes on consecutive
// outer indices), and writes the codes through shared memory so that each outer index's bytes
// go out K-contiguous.
//
// Groups (the MoE experts' operands, each quantized as a matrix of its own, in one launch):
// with desc non-null, grid layer g (blockIdx.z) quantizes the matrix of desc[4g + 1] rows (its
// own `rows`; 0: nothing, not counted) × cols at src + desc[4g], its codes at codes + desc[4g + 2]
// (bytes) and its scales at scales + desc[4g + 3]; ld and the scale strides are shared.
// Launch: grid (ceil(K / 128), min(T, 65535), groups) with T = ceil(outer / tile_outer) along
// the columns and ceil(outer / panel) along the rows (panel: LT_PANEL_VEC for tile_outer 1, else
// 128), K and outer a group's largest; block 256, dynamic shared 0; the blocks stride over T past
// 65535.
#define LT_PANEL_VEC 32
KERNEL void fp8_quantize_lt_f32(const float* __restrict__ src, int rows, int cols, int k_on_rows,
                                int tile_outer, unsigned char* __restrict__ codes, long long ld,
                                float* __restrict__ scales, long long scale_outer,
                                long long scale_k, unsigned int* __restrict__ bad_tiles,
                                const long long* __restrict__ desc) {
    __shared__ float scratch[32];
    const int tk = blockIdx.x;
    if (desc) {
        const long long* d = desc + 4 * (long long)blockIdx.z;
        src += d[0];
        rows = (int)d[1];
        codes += d[2];
        scales += d[3];
    }
    // A group's K (its rows, when K runs along them) may be shorter than the grid's.
    if (rows == 0 || (k_on_rows && tk * 128 >= rows)) return;
    if (!k_on_rows) {
        const int outer = rows, k = cols;
        const int tiles_o = (outer + tile_outer - 1) / tile_outer;
        for (int to = blockIdx.y; to < tiles_o; to += gridDim.y) {
            QuantTile t = tile_at(tk, to, outer, k, tile_outer, 128);
            int count = t.h * t.w;
            float amax = tile_amax(src, cols, t, scratch);
            bool bad = amax == TM_INF;
            float s = lt_scale(amax);
            if (threadIdx.x == 0) {
                scales[(long long)to * scale_outer + (long long)tk * scale_k] = s;
                if (bad) atomicAdd(bad_tiles, 1u);
            }
            for (int e = threadIdx.x; e < count; e += blockDim.x) {
                long long o = t.r0 + e / t.w, j = t.c0 + e % t.w;
                float v = src[o * cols + j];
                codes[o * ld + j] = bad ? (uint8_t)0x7f : f32_to_e4m3(v / s);
            }
        }
        return;
    }
    // Along the rows: 8 warps; per warp and outer index of the panel a partial amax, then per
    // outer index (VEC) the tile's scale, or -1 for a tile to set to NaN.
    __shared__ float part[8][128];
    __shared__ float tile_s[128];
    __shared__ unsigned char bytes[128][132];  // rows of 33 words: lanes in distinct banks
    const int outer = cols, k = rows;
    const int panel = tile_outer == 1 ? LT_PANEL_VEC : 128;
    const int panels = (outer + panel - 1) / panel;
    const int j0 = tk * 128, h = tm_min(128, k - j0);
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, warps = blockDim.x / WARP;
    for (int pn = blockIdx.y; pn < panels; pn += gridDim.y) {
        const int o0 = pn * panel, wd = tm_min(panel, outer - o0);
        for (int s0 = 0; s0 < panel; s0 += WARP) {
            int ol = s0 + lane;
            float m = 0.0f;
            if (ol < wd)
                for (int j = w; j < h; j += warps) {
                    float v = src[(long long)(j0 + j) * cols + o0 + ol];
                    m = fmaxf(m, tm_isfinite(v) ? fabsf(v) : TM_INF);
                }
            part[w][ol] = m;
        }
        __syncthreads();
        if (threadIdx.x < panel) {
            float m = 0.0f;
            for (int i = 0; i < warps; i++) m = fmaxf(m, part[i][threadIdx.x]);
            part[0][threadIdx.x] = m;  // only this thread reads or writes column threadIdx.x
        }
        __syncthreads();
        if (tile_outer == 1) {
            if (threadIdx.x < wd) {
                float amax = part[0][threadIdx.x];
                bool bad = amax == TM_INF;
                float s = lt_scale(amax);
                tile_s[threadIdx.x] = bad ? -1.0f : s;
                scales[(long long)(o0 + threadIdx.x) * scale_outer + (long long)tk * scale_k] = s;
                if (bad) atomicAdd(bad_tiles, 1u);
            }
        } else {
            float amax = block_max(threadIdx.x < wd ? part[0][threadIdx.x] : 0.0f, scratch);
            if (threadIdx.x == 0) {
                bool bad = amax == TM_INF;
                float s = lt_scale(amax);
                tile_s[0] = bad ? -1.0f : s;
                scales[(long long)pn * scale_outer + (long long)tk * scale_k] = s;
                if (bad) atomicAdd(bad_tiles, 1u);
            }
        }
        __syncthreads();
        for (int s0 = 0; s0 < panel; s0 += WARP) {
            int ol = s0 + lane;
            if (ol >= wd) continue;
            float s = tile_s[tile_outer == 1 ? ol : 0];
            for (int j = w; j < h; j += warps) {
                float v = src[(long long)(j0 + j) * cols + o0 + ol];
                bytes[ol][j] = s < 0.0f ? (uint8_t)0x7f : f32_to_e4m3(v / s);
            }
        }
        __syncthreads();
        for (int e = threadIdx.x; e < wd * 128; e += blockDim.x) {
            int ol = e / 128, j = e % 128;
            if (j < h) codes[(long long)(o0 + ol) * ld + j0 + j] = bytes[ol][j];
        }
        __syncthreads();  // before the next panel reuses the shared arrays
    }
}

// c[i] += truncate_mantissa(part[i], bits): the promotion of a tensor-core partial sum (its
// mantissa cut to `bits` bits, 14 in kernels/src/backend/types.rs) into the FP32 accumulator.
// Launch: grid (min(ceil(n / 256), 65535)), block 256, dynamic shared 0.
KERNEL void promote_truncated_f32(float* __restrict__ c, const float* __restrict__ part,
                                  long long n, int bits) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        c[i] += truncate_mantissa(part[i], bits);
}

// c[i · ldc + j] += part[i · ldp + j], i < rows, j < cols: a product computed into a padded
// buffer (cuBLASLt's FP8 GEMM: rows to 4, columns to 16) added into its place, exactly.
// Launch: grid (ceil(cols / 256), min(rows, 65535)), block 256, dynamic shared 0 (the blocks
// stride over the rows past 65535).
KERNEL void add_block_f32(float* __restrict__ c, long long ldc, const float* __restrict__ part,
                          long long ldp, int rows, int cols) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    for (int i = blockIdx.y; i < rows; i += gridDim.y) c[i * ldc + j] += part[i * ldp + j];
}

// Test probes (not used in training): the codecs of common.cuh on arbitrary inputs, for the
// bit-for-bit comparison with the Rust codecs in the emulator tests.
// bf16[i] = f32_to_bf16(x[i]); e4m3[i] = f32_to_e4m3(x[i]).
// Launch: grid-stride, any grid, block a multiple of 32.
KERNEL void codec_encode_probe(const float* __restrict__ x, long long n,
                               unsigned short* __restrict__ bf16, unsigned char* __restrict__ e4m3) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        bf16[i] = f32_to_bf16(x[i]);
        e4m3[i] = f32_to_e4m3(x[i]);
    }
}

// out[i] = e4m3_to_f32(codes[i]). Launch: grid-stride, any grid, block a multiple of 32.
KERNEL void codec_decode_probe(const unsigned char* __restrict__ codes, int n,
                               float* __restrict__ out) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = e4m3_to_f32(codes[i]);
}
