// cuBLAS on the CPU, for the CUDA driver emulation (driver.cpp): the GEMMs tokenmill's CUDA
// backend calls — cublasSgemm_v2 and cublasGemmEx with BF16 or FP32 operands, FP32 C and
// CUBLAS_COMPUTE_32F — with cuBLAS's contract: column-major operands, op(A) and op(B) by
// the transpose flags, leading dimensions checked, C = alpha·op(A)·op(B) + beta·C, and C not
// read when beta is 0. Each element is a sum over k in order in FP32 (cuBLAS's order is its
// own; the backend's comparisons allow for that). Linked into `libcublas.so`.
#include <cstdint>
#include <cstring>
#include <vector>

#include "link.h"

typedef int cublasStatus_t;
enum : int {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum : int { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 };
enum : int { CUDA_R_32F = 0, CUDA_R_16BF = 14 };
enum : int { CUBLAS_COMPUTE_32F = 68 };

namespace {

struct Handle {
    void* stream = nullptr;
};

float bf16(const void* p, size_t i) {
    uint32_t bits = (uint32_t) static_cast<const uint16_t*>(p)[i] << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
float f32(const void* p, size_t i) { return static_cast<const float*>(p)[i]; }

// op(X) as a dense row-major [rows][depth] copy: row r of op(X) is column r of X when X is
// not transposed (column-major storage), row r of X's transpose otherwise.
std::vector<float> dense(const void* x, bool is_bf16, int op, int rows, int depth, int ld,
                         bool rows_are_columns_when_n) {
    std::vector<float> out((size_t)rows * depth);
    for (int r = 0; r < rows; r++)
        for (int d = 0; d < depth; d++) {
            // Column-major X[i, j] = x[i + j·ld].
            bool n = op == CUBLAS_OP_N;
            size_t idx = rows_are_columns_when_n == n ? (size_t)r * ld + d : (size_t)d * ld + r;
            out[(size_t)r * depth + d] = is_bf16 ? bf16(x, idx) : f32(x, idx);
        }
    return out;
}

cublasStatus_t gemm(void* h, int ta, int tb, int m, int n, int k, const float* alpha,
                    const void* a, bool a16, int lda, const void* b, bool b16, int ldb,
                    const float* beta, float* c, int ldc) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    // A host address where the GPU has no pageable access: a fault on a GPU.
    if (m > 0 && n > 0 && !tm_emu_link::reachable(c)) return CUBLAS_STATUS_EXECUTION_FAILED;
    if (m > 0 && n > 0 && k > 0 && !(tm_emu_link::reachable(a) && tm_emu_link::reachable(b)))
        return CUBLAS_STATUS_EXECUTION_FAILED;
    for (int t : {ta, tb})
        if (t != CUBLAS_OP_N && t != CUBLAS_OP_T && t != CUBLAS_OP_C)
            return CUBLAS_STATUS_INVALID_VALUE;
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    // Stored A is m×k (op N) or k×m; its leading dimension is at least its row count.
    if (lda < (ta == CUBLAS_OP_N ? m : k) || lda < 1) return CUBLAS_STATUS_INVALID_VALUE;
    if (ldb < (tb == CUBLAS_OP_N ? k : n) || ldb < 1) return CUBLAS_STATUS_INVALID_VALUE;
    if (ldc < m || ldc < 1) return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    // alpha and beta are read now (host pointer mode); the product when the stream gets here.
    float al = *alpha, be = *beta;
    tm_emu_link::defer(static_cast<Handle*>(h)->stream, [=] {
        // op(A) [m][k]: with op N, row i of op(A) is row i of column-major A: A[i + l·lda].
        std::vector<float> ar = dense(a, a16, ta, m, k, lda, false);
        // op(B)ᵀ [n][k]: with op N, column j of B is contiguous: B[l + j·ldb].
        std::vector<float> bc = dense(b, b16, tb, n, k, ldb, true);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                float s = 0.0f;
                const float* x = &ar[(size_t)i * k];
                const float* y = &bc[(size_t)j * k];
                for (int l = 0; l < k; l++) s += x[l] * y[l];
                float* out = &c[i + (size_t)j * ldc];
                *out = be == 0.0f ? al * s : al * s + be * *out;
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

#define API extern "C" __attribute__((visibility("default")))

API cublasStatus_t cublasCreate_v2(void** h) {
    *h = new Handle;
    return CUBLAS_STATUS_SUCCESS;
}
API cublasStatus_t cublasDestroy_v2(void* h) {
    delete static_cast<Handle*>(h);
    return CUBLAS_STATUS_SUCCESS;
}
API cublasStatus_t cublasSetStream_v2(void* h, void* s) {
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    static_cast<Handle*>(h)->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
API cublasStatus_t cublasSgemm_v2(void* h, int ta, int tb, int m, int n, int k,
                                  const float* alpha, const float* a, int lda, const float* b,
                                  int ldb, const float* beta, float* c, int ldc) {
    return gemm(h, ta, tb, m, n, k, alpha, a, false, lda, b, false, ldb, beta, c, ldc);
}
API cublasStatus_t cublasGemmEx(void* h, int ta, int tb, int m, int n, int k, const void* alpha,
                                const void* a, int atype, int lda, const void* b, int btype,
                                int ldb, const void* beta, void* c, int ctype, int ldc,
                                int compute, int /*algo*/) {
    bool ok_ab = (atype == CUDA_R_16BF || atype == CUDA_R_32F) && btype == atype;
    if (!ok_ab || ctype != CUDA_R_32F || compute != CUBLAS_COMPUTE_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    bool is16 = atype == CUDA_R_16BF;
    return gemm(h, ta, tb, m, n, k, static_cast<const float*>(alpha), a, is16, lda, b, is16,
                ldb, static_cast<const float*>(beta), static_cast<float*>(c), ldc);
}
