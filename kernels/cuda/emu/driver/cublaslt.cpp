// cuBLASLt for the CUDA driver emulation: the block-scaled FP8 matmul tokenmill calls
// (src/fp8.rs) — DeepSeek-V3's scaling as cuBLAS 12.9+ offers it on Hopper — with the contract
// of the cuBLAS manual's "1D and 128x128 2D block scaling for FP8 data types": E4M3 A and B in
// the "TN" layout, FP32 C/D, CUBLAS_COMPUTE_32F with FP32 scale type; each operand's scales
// VEC128_32F (one FP32 scale per 128 consecutive elements along K for each outer index, stored
// outer index fastest: scale(i, k) at i + (k / 128) · outer) or BLK128x128_32F (one per 128 ×
// 128 block, K blocks fastest with the row stride ceil(K / 128) rounded up to a multiple of 4:
// scale(i, k) at k / 128 + (i / 128) · L4); the pairs VEC×VEC, VEC×BLK and BLK×VEC (not
// BLK×BLK); the outer dimensions multiples of 4, FP8 leading dimensions multiples of 16
// elements, every pointer 16-byte aligned — and as aligned as the preference told the
// heuristic (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES, 256 unless set: the real
// library picks kernels for the alignment it was promised). Anything else is refused
// (NOT_SUPPORTED or INVALID_VALUE, with the reason on stderr), so a call the real library
// would reject fails here too. Operands, scales and D must lie inside device allocations (the
// emulated driver's check; D too where the device reaches pageable host memory: the library
// does not promise to write there).
//
// Arithmetic: each 128-long block of K summed in FP32 in order over the decoded E4M3 products
// (exact), scaled as (scale_a · block) · scale_b and added into an FP32 accumulator — the
// promotion cuBLASLt documents (fast accumulation off); the tensor cores' own accumulator
// inside a block is not modelled. Linked into `libcublasLt.so`.
#include <dlfcn.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "link.h"

typedef int cublasStatus_t;
enum : int {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum : int { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum : int { CUDA_R_32F = 0, CUDA_R_8F_E4M3 = 28 };
enum : int { CUBLAS_COMPUTE_32F = 68 };
// cublasLtMatmulDescAttributes_t (the ones tokenmill sets).
enum : int {
    DESC_TRANSA = 3,
    DESC_TRANSB = 4,
    DESC_A_SCALE_POINTER = 17,
    DESC_B_SCALE_POINTER = 18,
    DESC_FAST_ACCUM = 25,
    DESC_A_SCALE_MODE = 31,
    DESC_B_SCALE_MODE = 32,
};
enum : int {
    PREF_MAX_WORKSPACE_BYTES = 1,
    PREF_MIN_ALIGNMENT_A_BYTES = 5,
    PREF_MIN_ALIGNMENT_D_BYTES = 8,
};
enum : int { SCALE_VEC128_32F = 4, SCALE_BLK128x128_32F = 5 };

namespace {

struct Desc {
    int compute, scale_type;
    int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
    int32_t a_mode = 0, b_mode = 0;
    const void* a_scale = nullptr;
    const void* b_scale = nullptr;
    int8_t fast = 0;
};

struct Layout {
    int type;
    uint64_t rows, cols;
    int64_t ld;
};

struct Pref {
    uint64_t workspace = 0;
    // The alignments of A, B, C and D the caller promises (bytes).
    uint32_t align[4] = {256, 256, 256, 256};
};

// The algorithm handle cuBLASLt returns: opaque 64 bytes, which we tag.
constexpr uint64_t kAlgoTag = 0x746d2d6c742d3031ull;  // "tm-lt-01"

cublasStatus_t fail(cublasStatus_t r, const std::string& why) {
    std::fprintf(stderr, "emulated cuBLASLt: %s\n", why.c_str());
    return r;
}

// The emulated driver's check that [p, p + bytes) lies inside one device allocation.
bool device_range(const void* p, size_t bytes) { return tm_emu_link::device_range(p, bytes) == 1; }

float e4m3(uint8_t c) {
    int sign = c >> 7, exp = (c >> 3) & 0xf, man = c & 7;
    float v;
    if (exp == 0xf && man == 7) return NAN;
    if (exp == 0) v = std::ldexp((float)man, -9);
    else v = std::ldexp(1.0f + man / 8.0f, exp - 7);
    return sign ? -v : v;
}

// The shape of one call, validated: D (m × n, column-major, ld ldd) = op(A) (m × k) · B (k × n)
// with A stored k × m (transposed) and B stored k × n.
struct Shape {
    uint64_t m, n, k;
    int64_t lda, ldb, ldc, ldd;
};

// Scale count of an operand with `outer` rows of `k` (VEC128 or BLK128x128).
uint64_t scale_count(int mode, uint64_t outer, uint64_t k) {
    uint64_t l = (k + 127) / 128;
    if (mode == SCALE_VEC128_32F) return l * outer;
    return ((outer + 127) / 128) * ((l + 3) / 4 * 4);
}

// The scale applying to element (outer i, inner kk).
float scale_at(const float* s, int mode, uint64_t outer, uint64_t k, uint64_t i, uint64_t kk) {
    uint64_t l = (k + 127) / 128;
    if (mode == SCALE_VEC128_32F) return s[i + (kk / 128) * outer];
    return s[kk / 128 + (i / 128) * ((l + 3) / 4 * 4)];
}

cublasStatus_t validate(const Desc* d, const Layout* a, const Layout* b, const Layout* c,
                        const Layout* dl, Shape* out) {
    if (!d || !a || !b || !c || !dl) return fail(CUBLAS_STATUS_INVALID_VALUE, "null descriptor");
    if (d->compute != CUBLAS_COMPUTE_32F || d->scale_type != CUDA_R_32F)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "only CUBLAS_COMPUTE_32F with FP32 scales");
    if (a->type != CUDA_R_8F_E4M3 || b->type != CUDA_R_8F_E4M3)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "only E4M3 A and B are emulated");
    if (c->type != CUDA_R_32F || dl->type != CUDA_R_32F)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "only FP32 C and D are emulated");
    if (d->transa != CUBLAS_OP_T || d->transb != CUBLAS_OP_N)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "FP8 needs the TN layout (A transposed, B not)");
    auto mode_ok = [](int m) { return m == SCALE_VEC128_32F || m == SCALE_BLK128x128_32F; };
    if (!mode_ok(d->a_mode) || !mode_ok(d->b_mode))
        return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                    "only VEC128_32F and BLK128x128_32F scale modes are emulated");
    if (d->a_mode == SCALE_BLK128x128_32F && d->b_mode == SCALE_BLK128x128_32F)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "BLK128x128 on both operands is not supported");
    Shape s{a->cols, b->cols, a->rows, a->ld, b->ld, c->ld, dl->ld};
    if (b->rows != s.k)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "A and B disagree on K");
    if (c->rows != s.m || c->cols != s.n || dl->rows != s.m || dl->cols != s.n)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "C or D is not m × n");
    if (s.lda < (int64_t)s.k || s.ldb < (int64_t)s.k || s.ldc < (int64_t)s.m ||
        s.ldd < (int64_t)s.m)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "a leading dimension below its row count");
    if (s.lda % 16 || s.ldb % 16 || s.ldc % 4 || s.ldd % 4)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "leading dimensions must be 16-byte multiples");
    if (s.m % 4 || s.n % 4)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                    "block scaling needs M and N multiples of 4, got " + std::to_string(s.m) +
                        " × " + std::to_string(s.n));
    if (s.k == 0) return fail(CUBLAS_STATUS_INVALID_VALUE, "K = 0");
    *out = s;
    return CUBLAS_STATUS_SUCCESS;
}

bool aligned(const void* p) { return ((uintptr_t)p & 15) == 0; }

}  // namespace

#define API extern "C" __attribute__((visibility("default")))

API cublasStatus_t cublasLtCreate(void** h) {
    *h = new int(1);
    return CUBLAS_STATUS_SUCCESS;
}
API cublasStatus_t cublasLtDestroy(void* h) {
    delete static_cast<int*>(h);
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasLtMatmulDescCreate(void** d, int compute, int scale_type) {
    Desc* x = new Desc;
    x->compute = compute;
    x->scale_type = scale_type;
    *d = x;
    return CUBLAS_STATUS_SUCCESS;
}
API cublasStatus_t cublasLtMatmulDescDestroy(void* d) {
    delete static_cast<Desc*>(d);
    return CUBLAS_STATUS_SUCCESS;
}
API cublasStatus_t cublasLtMatmulDescSetAttribute(void* desc, int attr, const void* buf,
                                                  size_t size) {
    Desc* d = static_cast<Desc*>(desc);
    if (!d || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    auto take = [&](void* field, size_t want) -> cublasStatus_t {
        if (size != want)
            return fail(CUBLAS_STATUS_INVALID_VALUE,
                        "attribute " + std::to_string(attr) + ": " + std::to_string(size) +
                            " bytes, expected " + std::to_string(want));
        std::memcpy(field, buf, want);
        return CUBLAS_STATUS_SUCCESS;
    };
    switch (attr) {
        case DESC_TRANSA: return take(&d->transa, 4);
        case DESC_TRANSB: return take(&d->transb, 4);
        case DESC_A_SCALE_POINTER: return take(&d->a_scale, 8);
        case DESC_B_SCALE_POINTER: return take(&d->b_scale, 8);
        case DESC_FAST_ACCUM: return take(&d->fast, 1);
        case DESC_A_SCALE_MODE: return take(&d->a_mode, 4);
        case DESC_B_SCALE_MODE: return take(&d->b_mode, 4);
        default:
            return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                        "matmul attribute " + std::to_string(attr) + " is not emulated");
    }
}

API cublasStatus_t cublasLtMatrixLayoutCreate(void** l, int type, uint64_t rows, uint64_t cols,
                                              int64_t ld) {
    *l = new Layout{type, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}
API cublasStatus_t cublasLtMatrixLayoutDestroy(void* l) {
    delete static_cast<Layout*>(l);
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasLtMatmulPreferenceCreate(void** p) {
    *p = new Pref;
    return CUBLAS_STATUS_SUCCESS;
}
API cublasStatus_t cublasLtMatmulPreferenceDestroy(void* p) {
    delete static_cast<Pref*>(p);
    return CUBLAS_STATUS_SUCCESS;
}
API cublasStatus_t cublasLtMatmulPreferenceSetAttribute(void* pref, int attr, const void* buf,
                                                        size_t size) {
    if (!pref || !buf) return CUBLAS_STATUS_INVALID_VALUE;
    Pref* p = static_cast<Pref*>(pref);
    if (attr == PREF_MAX_WORKSPACE_BYTES && size == 8) {
        std::memcpy(&p->workspace, buf, 8);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (attr >= PREF_MIN_ALIGNMENT_A_BYTES && attr <= PREF_MIN_ALIGNMENT_D_BYTES && size == 4) {
        uint32_t a;
        std::memcpy(&a, buf, 4);
        if (a == 0 || (a & (a - 1)) || a > 256)
            return fail(CUBLAS_STATUS_INVALID_VALUE, "alignment not a power of two ≤ 256");
        p->align[attr - PREF_MIN_ALIGNMENT_A_BYTES] = a;
        return CUBLAS_STATUS_SUCCESS;
    }
    return fail(CUBLAS_STATUS_NOT_SUPPORTED, "preference attribute is not emulated");
}

// cublasLtMatmulHeuristicResult_t: the algorithm (64 bytes), workspace size, state, waves.
struct Heuristic {
    uint64_t algo[8];
    size_t workspace;
    int state;
    float waves;
    int reserved[4];
};

API cublasStatus_t cublasLtMatmulAlgoGetHeuristic(void* h, void* desc, void* a, void* b, void* c,
                                                  void* d, void* pref, int requested,
                                                  Heuristic* out, int* found) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!pref || requested < 1 || !out || !found) return CUBLAS_STATUS_INVALID_VALUE;
    *found = 0;
    Shape s;
    if (cublasStatus_t r = validate(static_cast<Desc*>(desc), static_cast<Layout*>(a),
                                    static_cast<Layout*>(b), static_cast<Layout*>(c),
                                    static_cast<Layout*>(d), &s))
        return r;
    std::memset(out, 0, sizeof *out);
    out->algo[0] = kAlgoTag;
    // The alignments the algorithm was chosen for.
    const Pref* pr = static_cast<const Pref*>(pref);
    for (int i = 0; i < 4; i++) out->algo[1 + i] = pr->align[i];
    out->waves = 1.0f;
    *found = 1;
    return CUBLAS_STATUS_SUCCESS;
}

API cublasStatus_t cublasLtMatmul(void* h, void* desc, const float* alpha, const void* a,
                                  void* la, const void* b, void* lb, const float* beta,
                                  const void* c, void* lc, void* d, void* ld,
                                  const uint64_t* algo, void* /*workspace*/, size_t /*ws*/,
                                  void* stream) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!algo || algo[0] != kAlgoTag)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "the algorithm is not one the heuristic gave");
    const Desc* dd = static_cast<Desc*>(desc);
    Shape s;
    if (cublasStatus_t r = validate(dd, static_cast<Layout*>(la), static_cast<Layout*>(lb),
                                    static_cast<Layout*>(lc), static_cast<Layout*>(ld), &s))
        return r;
    if (!dd->a_scale || !dd->b_scale)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "a block scale mode without its scale pointer");
    for (const void* p : {a, b, c, (const void*)d, dd->a_scale, dd->b_scale})
        if (!aligned(p)) return fail(CUBLAS_STATUS_INVALID_VALUE, "a pointer not 16-byte aligned");
    const void* abcd[4] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        if ((uintptr_t)abcd[i] % algo[1 + i])
            return fail(CUBLAS_STATUS_INVALID_VALUE,
                        std::string("ABCD").substr(i, 1) + " is less aligned than the " +
                            std::to_string(algo[1 + i]) +
                            " bytes the algorithm was chosen for");
    uint64_t a_scales = scale_count(dd->a_mode, s.m, s.k);
    uint64_t b_scales = scale_count(dd->b_mode, s.n, s.k);
    struct Range {
        const void* p;
        size_t bytes;
        const char* what;
    } ranges[] = {
        {a, (size_t)(s.lda * (int64_t)(s.m - 1) + (int64_t)s.k), "A"},
        {b, (size_t)(s.ldb * (int64_t)(s.n - 1) + (int64_t)s.k), "B"},
        {dd->a_scale, (size_t)a_scales * 4, "A's scales"},
        {dd->b_scale, (size_t)b_scales * 4, "B's scales"},
    };
    if (s.m == 0 || s.n == 0) return CUBLAS_STATUS_SUCCESS;
    for (const Range& r : ranges)
        if (!device_range(r.p, r.bytes))
            return fail(CUBLAS_STATUS_INVALID_VALUE,
                        std::string(r.what) + ": " + std::to_string(r.bytes) +
                            " bytes are not inside one device allocation");
    size_t d_bytes = (size_t)(s.ldd * (int64_t)(s.n - 1) + (int64_t)s.m) * 4;
    // Even where kernels reach pageable host memory: cuBLASLt does not promise to write it.
    if (!device_range(d, d_bytes))
        return fail(CUBLAS_STATUS_INVALID_VALUE, "D is not inside one device allocation");
    const uint8_t* a8 = static_cast<const uint8_t*>(a);
    const uint8_t* b8 = static_cast<const uint8_t*>(b);
    const float* sa = static_cast<const float*>(dd->a_scale);
    const float* sb = static_cast<const float*>(dd->b_scale);
    // The descriptor's modes, alpha and beta are read now; the product when the stream gets
    // here.
    int a_mode = dd->a_mode, b_mode = dd->b_mode;
    float al = *alpha, be = *beta;
    const float* cf = static_cast<const float*>(c);
    float* df = static_cast<float*>(d);
    tm_emu_link::defer(stream, [=] {
        // Decoded operands, K contiguous: A's row i is column i of the stored k × m matrix.
        std::vector<float> ad(s.m * s.k), bd(s.n * s.k);
        for (uint64_t i = 0; i < s.m; i++)
            for (uint64_t l = 0; l < s.k; l++) ad[i * s.k + l] = e4m3(a8[l + i * s.lda]);
        for (uint64_t j = 0; j < s.n; j++)
            for (uint64_t l = 0; l < s.k; l++) bd[j * s.k + l] = e4m3(b8[l + j * s.ldb]);
        for (uint64_t j = 0; j < s.n; j++)
            for (uint64_t i = 0; i < s.m; i++) {
                float acc = 0.0f;
                for (uint64_t k0 = 0; k0 < s.k; k0 += 128) {
                    float block = 0.0f;
                    for (uint64_t l = k0; l < s.k && l < k0 + 128; l++)
                        block += ad[i * s.k + l] * bd[j * s.k + l];
                    float x = scale_at(sa, a_mode, s.m, s.k, i, k0);
                    float y = scale_at(sb, b_mode, s.n, s.k, j, k0);
                    acc += (x * block) * y;
                }
                float out = al * acc;
                if (be != 0.0f) out += be * cf[i + j * s.ldc];
                df[i + j * s.ldd] = out;
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}
