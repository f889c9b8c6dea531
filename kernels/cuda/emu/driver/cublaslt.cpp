// cuBLASLt for the CUDA driver emulation: present (the backend asks for it at start) but
// without matmuls — the block-scaled FP8 GEMM is a Hopper tensor-core feature this emulation
// does not model, so creating a handle reports CUBLAS_STATUS_NOT_SUPPORTED and the device
// check's vendor-FP8 rows say so. Linked into `libcublasLt.so`.
#define API extern "C" __attribute__((visibility("default")))

API int cublasLtCreate(void** h) {
    *h = nullptr;
    return 15;  // CUBLAS_STATUS_NOT_SUPPORTED
}
API int cublasLtDestroy(void*) { return 0; }
