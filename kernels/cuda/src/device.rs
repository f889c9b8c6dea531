//! One GPU: its context and stream, the kernels' module (compiled by NVRTC for its
//! architecture), and the cuBLAS handle; typed uploads, downloads and launches with errors that
//! say what failed (out of memory: the size asked for and what was free).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cudarc::cublas::{CudaBlas, sys as blas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr,
    PushKernelArg, ValidAsZeroBits,
};
use tokenmill_kernels::backend::{DeviceCounters, MatMul};

use crate::error::{Error, Result, driver};
use crate::{libs, nvrtc, source};

/// What the devices of this process have cost the host ([`counters`]): copies, bytes to the
/// device, bytes to the host, stream synchronisations, nanoseconds blocked.
static COUNTERS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
const COPIES: usize = 0;
const TO_DEVICE: usize = 1;
const TO_HOST: usize = 2;
const WAITS: usize = 3;
const BLOCKED_NS: usize = 4;

/// The copies made by [`Device::upload`] and [`Device::download`] and the waits for the
/// device so far in this process, all devices together (take two readings and subtract for a
/// span).
pub fn counters() -> DeviceCounters {
    let c = |i: usize| COUNTERS[i].load(Ordering::Relaxed);
    DeviceCounters {
        copies: c(COPIES),
        to_device: c(TO_DEVICE),
        to_host: c(TO_HOST),
        waits: c(WAITS),
        blocked_ns: c(BLOCKED_NS),
    }
}

fn count_copy(dir: usize, bytes: usize) {
    COUNTERS[COPIES].fetch_add(1, Ordering::Relaxed);
    COUNTERS[dir].fetch_add(bytes as u64, Ordering::Relaxed);
}

/// Runs `f`, a call that may block on the device, and counts the time it took as blocked.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let t = std::time::Instant::now();
    let r = f();
    COUNTERS[BLOCKED_NS].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

/// How the GPU may reach host memory: what decides whether resident training keeps explicit
/// copies or lets the driver migrate pages (HMM) ([`Device::host_access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HostAccess {
    /// Kernels may read and write pageable host memory directly (`malloc`'d, no registration).
    pub pageable: bool,
    /// ... through the host's page tables (hardware coherence, as on Grace Hopper).
    pub host_page_tables: bool,
    /// The host and the device may touch managed memory at the same time.
    pub concurrent_managed: bool,
}

/// Where an operation's host slices are for its kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Memory {
    /// Copied to device memory for the call, the results copied back (any GPU).
    #[default]
    Copy,
    /// Passed by address: kernels and cuBLAS read and write the host's own pages, which the
    /// driver migrates to the GPU at first touch and keeps there until the host touches them
    /// (HMM: needs [`HostAccess::pageable`]). The call ends with a stream synchronisation
    /// instead of copies.
    Host,
    /// Passed by address when the slice lies in CUDA managed memory, copied otherwise: the
    /// binary's allocator serves its large blocks from managed memory
    /// ([`crate::managed::enable`], which opening the device in this mode calls), so the
    /// model's buffers stay where the GPU touched them on any GPU, HMM or not. Needs
    /// [`HostAccess::concurrent_managed`].
    Managed,
}

/// A buffer an operation hands a kernel: a device copy of a host slice ([`Memory::Copy`], or
/// an operand a kernel changes in place), or the host slice's own address ([`Memory::Host`]).
/// It does not borrow the slice: the operation keeps the slice alive and unchanged by the host
/// until [`Device::finish`] (every operation synchronises before it returns).
#[derive(Debug)]
pub struct Buf<T> {
    ptr: u64,
    owned: Option<CudaSlice<T>>,
}

impl<T> Buf<T> {
    /// The host slice at `ptr` itself ([`Memory::Host`]).
    fn host(ptr: u64) -> Self {
        Buf { ptr, owned: None }
    }
    /// The address as a kernel argument.
    pub fn p(&self) -> &u64 {
        &self.ptr
    }
    /// True for a device copy (which a kernel may change in place), false for the host slice
    /// itself.
    pub fn is_copy(&self) -> bool {
        self.owned.is_some()
    }
    /// The address `n` elements in.
    pub fn at(&self, n: usize) -> u64 {
        self.ptr + (n * std::mem::size_of::<T>()) as u64
    }
}

/// The launch attribute for thread block clusters of `blocks` blocks along x.
fn cluster_attr(blocks: u32) -> cudarc::driver::sys::CUlaunchAttribute {
    use cudarc::driver::sys;
    sys::CUlaunchAttribute {
        id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
        pad: [0; 4],
        value: sys::CUlaunchAttributeValue {
            clusterDim: sys::CUlaunchAttributeValue_union__bindgen_ty_1 {
                x: blocks,
                y: 1,
                z: 1,
            },
        },
    }
}

/// `cfg` on `stream` with the attributes `attrs` as the driver's launch configuration (which
/// points into `attrs`: alive while it is used).
fn launch_config(
    cfg: &cudarc::driver::LaunchConfig,
    stream: cudarc::driver::sys::CUstream,
    attrs: &mut [cudarc::driver::sys::CUlaunchAttribute],
) -> cudarc::driver::sys::CUlaunchConfig {
    cudarc::driver::sys::CUlaunchConfig {
        gridDimX: cfg.grid_dim.0,
        gridDimY: cfg.grid_dim.1,
        gridDimZ: cfg.grid_dim.2,
        blockDimX: cfg.block_dim.0,
        blockDimY: cfg.block_dim.1,
        blockDimZ: cfg.block_dim.2,
        sharedMemBytes: cfg.shared_mem_bytes,
        hStream: stream,
        attrs: attrs.as_mut_ptr(),
        numAttrs: attrs.len() as u32,
    }
}

/// A GPU with the kernels loaded.
pub struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    funcs: HashMap<String, CudaFunction>,
    blas: CudaBlas,
    /// The device's name (`NVIDIA H200`).
    pub name: String,
    /// Compute capability.
    pub capability: (i32, i32),
    /// The NVRTC target the kernels were compiled for.
    pub arch: String,
    /// Device memory, bytes.
    pub total_memory: usize,
    /// Streaming multiprocessors (the blocks a persistent grid runs at once, one each).
    pub sms: usize,
    /// Whether the cubin came from the disk cache.
    pub cubin_cached: bool,
    /// The memory model's estimate for the run, reported with out-of-memory errors.
    pub estimate: Option<u64>,
    /// How host slices reach the kernels.
    pub memory: Memory,
    /// Whether operations inside a deferred scope ([`Device::begin_deferred`]) return without
    /// waiting for the device ([`Memory::Managed`] only: [`Device::set_defer_waits`]).
    defer: bool,
    /// [`Device::active_clusters`]'s answers by kernel and cluster size.
    clusters: std::sync::Mutex<HashMap<(String, u32), usize>>,
}

thread_local! {
    /// Deferred scopes this thread is inside ([`Device::begin_deferred`]).
    static DEFERRED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("capability", &self.capability)
            .field("arch", &self.arch)
            .finish()
    }
}

impl Device {
    /// Opens GPU `ordinal`: checks that the driver, NVRTC and cuBLAS load, compiles (or takes
    /// from the cache) the kernels for the device's architecture and loads every kernel.
    pub fn open(ordinal: usize) -> Result<Self> {
        libs::driver()?;
        libs::nvrtc()?;
        libs::blas()?;
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| Error::Unavailable(format!("cannot open CUDA device {ordinal}: {e}")))?;
        let capability = ctx
            .compute_capability()
            .map_err(driver("compute capability"))?;
        let name = ctx.name().map_err(driver("device name"))?;
        let total_memory = ctx.total_mem().map_err(driver("device memory"))?;
        let sms = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            )
            .map_err(driver("multiprocessors"))? as usize;
        let arch = nvrtc::arch_for(capability.0, capability.1);
        let compiled = nvrtc::compile(&source::program(), &arch)?;
        if !compiled.log.is_empty() {
            tracing::warn!(arch, log = %compiled.log, "NVRTC warnings");
        }
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(compiled.cubin))
            .map_err(driver(format!("load the {arch} cubin")))?;
        // Kernels with tiles over 48 KiB of shared memory (attention, the FP8 GEMM) must opt
        // in to the device's maximum.
        let optin = ctx
            .attribute(
                cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )
            .map_err(driver("shared memory per block"))?;
        let mut funcs = HashMap::new();
        for k in source::kernel_names() {
            let f = module
                .load_function(&k)
                .map_err(|_| Error::MissingKernel(k.clone()))?;
            f.set_attribute(
                cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                optin,
            )
            .map_err(driver(format!("shared memory of {k}")))?;
            funcs.insert(k, f);
        }
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|e| Error::Blas {
            lib: "cublas",
            op: "create handle".into(),
            message: format!("{e:?}"),
        })?;
        tracing::info!(%name, ?capability, %arch, cached = compiled.cached, "CUDA device ready");
        Ok(Device {
            ctx,
            stream,
            _module: module,
            funcs,
            blas,
            name,
            capability,
            arch,
            total_memory,
            sms,
            cubin_cached: compiled.cached,
            estimate: None,
            memory: Memory::Copy,
            defer: false,
            clusters: Default::default(),
        })
    }

    /// [`Device::open`] with host slices reaching the kernels as `memory` says; [`Memory::Host`]
    /// is refused, naming what is missing, on a GPU that cannot reach pageable host memory.
    pub fn open_with(ordinal: usize, memory: Memory) -> Result<Self> {
        let mut dev = Device::open(ordinal)?;
        if memory == Memory::Host {
            let access = dev.host_access()?;
            if !access.pageable {
                return Err(Error::Unavailable(format!(
                    "{} cannot reach pageable host memory (no HMM: it needs NVIDIA's open \
                     kernel modules and Linux ≥ 6.1 on x86, or a coherent Grace Hopper); use \
                     device = \"cuda\", which copies",
                    dev.name
                )));
            }
        }
        if memory == Memory::Managed {
            crate::managed::enable(&dev.ctx)?;
        }
        dev.memory = memory;
        Ok(dev)
    }

    /// How this GPU may reach host memory.
    pub fn host_access(&self) -> Result<HostAccess> {
        use cudarc::driver::sys::CUdevice_attribute as A;
        let get = |a: A| {
            self.ctx
                .attribute(a)
                .map(|v| v != 0)
                .map_err(driver("device attribute"))
        };
        Ok(HostAccess {
            pageable: get(A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS)?,
            host_page_tables: get(
                A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES,
            )?,
            concurrent_managed: get(A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS)?,
        })
    }

    /// The stream every operation runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The cuBLAS handle (on [`Device::stream`]).
    pub fn blas(&self) -> &CudaBlas {
        &self.blas
    }

    /// A kernel by name.
    pub fn func(&self, name: &str) -> Result<&CudaFunction> {
        self.funcs
            .get(name)
            .ok_or_else(|| Error::MissingKernel(name.into()))
    }

    /// Launches kernel `name` on the stream as `cfg` says, in thread block clusters of
    /// `cluster` blocks along x (`cuLaunchKernelEx`; 1: a plain `cuLaunchKernel`); `params`
    /// holds the address of each of its arguments, in the kernel's order and types.
    ///
    /// # Safety
    /// As for any kernel launch: `params` matches the kernel's signature, and every address
    /// among the arguments holds what the kernel reads and writes for this launch's shape.
    pub(crate) unsafe fn launch_clusters(
        &self,
        name: &str,
        cfg: cudarc::driver::LaunchConfig,
        cluster: u32,
        params: &mut [*mut std::ffi::c_void],
    ) -> Result<()> {
        use cudarc::driver::sys;
        let f = self.func(name)?.cu_function();
        self.ctx
            .bind_to_thread()
            .map_err(driver("bind the context"))?;
        let op = format!("launch {name} (clusters of {cluster})");
        if cluster == 1 {
            // SAFETY: the caller's contract; the function and stream are this device's.
            return unsafe {
                cudarc::driver::result::launch_kernel(
                    f,
                    cfg.grid_dim,
                    cfg.block_dim,
                    cfg.shared_mem_bytes,
                    self.stream.cu_stream(),
                    params,
                )
            }
            .map_err(driver(op));
        }
        let mut attr = [cluster_attr(cluster)];
        let config = launch_config(&cfg, self.stream.cu_stream(), &mut attr);
        // SAFETY: the caller's contract; `config` and its attribute live across the call.
        unsafe { sys::cuLaunchKernelEx(&config, f, params.as_mut_ptr(), std::ptr::null_mut()) }
            .result()
            .map_err(driver(op))
    }

    /// How many clusters of `cluster` blocks of kernel `name`, each block launched as `cfg`
    /// says, the device runs at once (`cuOccupancyMaxActiveClusters`): a persistent grid's
    /// clusters. Asked once per kernel and size.
    pub(crate) fn active_clusters(
        &self,
        name: &str,
        cfg: cudarc::driver::LaunchConfig,
        cluster: u32,
    ) -> Result<usize> {
        let key = (name.to_string(), cluster);
        let mut known = self.clusters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&n) = known.get(&key) {
            return Ok(n);
        }
        let f = self.func(name)?.cu_function();
        self.ctx
            .bind_to_thread()
            .map_err(driver("bind the context"))?;
        let mut attr = [cluster_attr(cluster)];
        let cfg = cudarc::driver::LaunchConfig {
            grid_dim: (cluster, 1, 1),
            ..cfg
        };
        let config = launch_config(&cfg, self.stream.cu_stream(), &mut attr);
        let mut n: std::ffi::c_int = 0;
        // SAFETY: `n`, `config` and its attribute are locals alive across the call; the
        // function is this device's.
        unsafe { cudarc::driver::sys::cuOccupancyMaxActiveClusters(&mut n, f, &config) }
            .result()
            .map_err(driver(format!(
                "cuOccupancyMaxActiveClusters ({name}, clusters of {cluster})"
            )))?;
        let n = usize::try_from(n).unwrap_or(0);
        known.insert(key, n);
        Ok(n)
    }

    fn oom(&self, what: &str, asked: usize, e: cudarc::driver::DriverError) -> Error {
        if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            let (free, total) = self.ctx.mem_get_info().unwrap_or((0, self.total_memory));
            Error::OutOfMemory {
                what: what.into(),
                asked,
                free,
                total,
                estimate: self.estimate,
            }
        } else {
            driver(format!("allocate {what} ({asked} bytes)"))(e)
        }
    }

    /// A device copy of `host`. From pageable memory the copy has read `host` when this
    /// returns; from managed memory it is asynchronous, so this waits for it — the caller may
    /// free or change `host` right after (a temporary of the operation). An empty `host` is one
    /// element of device memory, nothing copied: the driver allocates no zero bytes.
    pub fn upload<T: DeviceRepr>(&self, what: &str, host: &[T]) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            #[allow(unsafe_code)]
            // SAFETY: one element of device memory, never read: nothing indexes an empty
            // operand.
            return unsafe { self.stream.alloc::<T>(1) }.map_err(|e| self.oom(what, 0, e));
        }
        count_copy(TO_DEVICE, std::mem::size_of_val(host));
        let d = blocking(|| self.stream.clone_htod(host))
            .map_err(|e| self.oom(what, std::mem::size_of_val(host), e))?;
        if crate::managed::contains(host.as_ptr() as u64, std::mem::size_of_val(host)) {
            self.sync()?;
        }
        Ok(d)
    }

    /// `n` zeroed elements on the device.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        what: &str,
        n: usize,
    ) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros::<T>(n.max(1))
            .map_err(|e| self.oom(what, n * std::mem::size_of::<T>(), e))
    }

    fn raw<T: DeviceRepr>(&self, s: CudaSlice<T>) -> Buf<T> {
        Buf {
            ptr: self.addr(&s),
            owned: Some(s),
        }
    }

    /// Whether kernels take `host` by its own address: always under [`Memory::Host`], where it
    /// lies in managed memory under [`Memory::Managed`], never when copying.
    pub fn reaches<T>(&self, host: &[T]) -> bool {
        match self.memory {
            Memory::Copy => false,
            Memory::Host => true,
            Memory::Managed => {
                crate::managed::contains(host.as_ptr() as u64, std::mem::size_of_val(host))
            }
        }
    }

    /// `host` as a kernel's input: by address where the device reaches it
    /// ([`Device::reaches`]), else a device copy.
    pub fn input<T: DeviceRepr>(&self, what: &str, host: &[T]) -> Result<Buf<T>> {
        if self.reaches(host) {
            Ok(Buf::host(host.as_ptr() as u64))
        } else {
            Ok(self.raw(self.upload(what, host)?))
        }
    }

    /// A device copy of `host` whatever the memory: for an operand a kernel changes in place
    /// that the caller's slice must not see changed.
    pub fn copy_in<T: DeviceRepr>(&self, what: &str, host: &[T]) -> Result<Buf<T>> {
        Ok(self.raw(self.upload(what, host)?))
    }

    /// `host` as a kernel's output that it reads too (accumulation, in-place updates): by
    /// address where the device reaches it, else a device copy that [`Device::finish`] copies
    /// back.
    pub fn inout<T: DeviceRepr>(&self, what: &str, host: &mut [T]) -> Result<Buf<T>> {
        if self.reaches(host) {
            Ok(Buf::host(host.as_mut_ptr() as u64))
        } else {
            Ok(self.raw(self.upload(what, host)?))
        }
    }

    /// `host` as a kernel's output that it writes whole: by address where the device reaches
    /// it (nothing done to it first), else zeroed device memory that [`Device::finish`] copies
    /// back.
    pub fn written<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        what: &str,
        host: &mut [T],
    ) -> Result<Buf<T>> {
        if self.reaches(host) {
            Ok(Buf::host(host.as_mut_ptr() as u64))
        } else {
            Ok(self.raw(self.zeros(what, host.len())?))
        }
    }

    /// `host` as a kernel's output, zeros before the kernel runs: by address where the device
    /// reaches it (zeroed on the device, so the host's pages are not touched), else zeroed
    /// device memory that [`Device::finish`] copies back.
    pub fn output<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        what: &str,
        host: &mut [T],
    ) -> Result<Buf<T>> {
        match self.reaches(host) {
            true => {
                let ptr = host.as_mut_ptr() as u64;
                let bytes = std::mem::size_of_val(host);
                if bytes > 0 {
                    let n = bytes as i64;
                    let mut b = self.stream.launch_builder(self.func("fill_zero_u8")?);
                    b.arg(&ptr).arg(&n);
                    #[allow(unsafe_code)]
                    // SAFETY: `fill_zero_u8(unsigned char*, long long)` over the `n` bytes of
                    // the caller's live slice, which the device may reach (pageable access, or
                    // a managed block).
                    unsafe { b.launch(elementwise(bytes)) }
                        .map_err(driver(format!("zero {what}")))?;
                }
                Ok(Buf::host(ptr))
            }
            false => Ok(self.raw(self.zeros(what, host.len())?)),
        }
    }

    /// `n` zeroed elements of device memory as a [`Buf`] (a kernel's workspace, or the dense
    /// form of a result that [`Device::finish`] copies back).
    pub fn scratch<T: DeviceRepr + ValidAsZeroBits>(&self, what: &str, n: usize) -> Result<Buf<T>> {
        Ok(self.raw(self.zeros(what, n)?))
    }

    /// Ends a kernel's use of `buf`, the buffer of `host`: copies it back (a device copy), or
    /// waits for the stream (the host's own pages) — unless the calling thread is inside a
    /// deferred scope, whose end waits once (`Backend::settle`).
    pub fn finish<T: DeviceRepr>(&self, buf: &Buf<T>, host: &mut [T]) -> Result<()> {
        match &buf.owned {
            Some(d) => self.download(d, host),
            None if self.deferring() => Ok(()),
            None => self.sync(),
        }
    }

    /// Lets the operations that take managed memory by address return without waiting for
    /// the device inside deferred scopes ([`Device::begin_deferred`]). Only under
    /// [`Memory::Managed`]: there every buffer a queued kernel may still use is either a device
    /// buffer (freed in stream order) or a managed block, which the allocator keeps from
    /// reuse until the next wait ([`crate::managed::defer_reuse`]); host pages (HMM) could be
    /// unmapped or rewritten by the host's allocator under a queued kernel.
    pub fn set_defer_waits(&mut self, on: bool) -> Result<()> {
        if on && self.memory != Memory::Managed {
            return Err(Error::Unsupported(format!(
                "deferred waits need managed memory (device = \"cuda-managed\"), not {:?}",
                self.memory
            )));
        }
        crate::managed::defer_reuse(on);
        self.defer = on;
        Ok(())
    }

    /// Whether this device defers waits in deferred scopes.
    pub fn defers_waits(&self) -> bool {
        self.defer
    }

    /// Whether the calling thread's operations on this device skip their waits now.
    pub fn deferring(&self) -> bool {
        self.defer && DEFERRED.with(|d| d.get() > 0)
    }

    /// Opens a deferred scope on the calling thread (scopes nest): until the matching
    /// `Backend::settle` ([`Device::end_deferred`]), operations whose results lie in managed
    /// memory return without waiting for the device. The caller must not read or change on the
    /// host anything those operations write or read before the scope ends. False (and nothing
    /// opened) when this device does not defer.
    pub fn begin_deferred(&self) -> bool {
        if self.defer {
            DEFERRED.with(|d| d.set(d.get() + 1));
        }
        self.defer
    }

    /// Closes the calling thread's innermost deferred scope without waiting; true when it was
    /// the outermost, whose end the caller must wait for ([`Device::sync`]; the backend's
    /// `settle` does, reading the scope's count of non-finite FP8 tiles as its wait). False
    /// where this device does not defer (no scope was opened: [`Device::begin_deferred`]).
    pub fn end_deferred(&self) -> bool {
        if !self.defer {
            return false;
        }
        let depth = DEFERRED.with(|d| {
            let v = d.get().saturating_sub(1);
            d.set(v);
            v
        });
        depth == 0
    }

    /// Copies `dev` into `host` and waits for the stream: a copy into pageable memory is
    /// done when the call returns, one into managed memory (a large `Vec` under
    /// [`Memory::Managed`]) only once the stream is.
    pub fn download<T: DeviceRepr>(&self, dev: &CudaSlice<T>, host: &mut [T]) -> Result<()> {
        if host.is_empty() {
            return Ok(());
        }
        let view = dev.slice(..host.len());
        count_copy(TO_HOST, std::mem::size_of_val(host));
        blocking(|| self.stream.memcpy_dtoh(&view, host)).map_err(driver("copy to the host"))?;
        self.sync()
    }

    /// `C (+)= op(A)·op(B)` with cuBLAS on device addresses (row-major operands: computed as
    /// `Cᵀ = op(B)ᵀ·op(A)ᵀ` in cuBLAS's column-major terms). `lda`/`ldb` are the row strides
    /// of A and B as stored, so a K-slice of a larger matrix can be passed.
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        &self,
        p: MatMul,
        a: u64,
        lda: usize,
        b: u64,
        ldb: usize,
        c: u64,
        beta: f32,
    ) -> Result<()> {
        if p.m == 0 || p.n == 0 {
            return Ok(());
        }
        let alpha = 1.0f32;
        #[allow(unsafe_code)]
        // SAFETY: the callers pass addresses of the stored operands with the given leading
        // dimensions (they check the lengths against the shape) and of C with m·n values; as
        // in `gemm_bf16`, cuBLAS's A is our B and its B our A.
        let r = unsafe {
            blas_sys::cublasSgemm_v2(
                *self.blas.handle(),
                op(p.tb),
                op(p.ta),
                p.n as i32,
                p.m as i32,
                p.k as i32,
                &alpha,
                b as *const f32,
                ldb as i32,
                a as *const f32,
                lda as i32,
                &beta,
                c as *mut f32,
                p.n as i32,
            )
        };
        blas_status(r, || format!("sgemm {}×{}×{}", p.m, p.n, p.k))
    }

    /// `C = op(A)·op(B) + beta·C` with BF16 operands (their `u16` bit patterns, stored as
    /// [`Device::sgemm`]'s) and FP32 C, products exact and accumulated in FP32 on the tensor
    /// cores (cuBLAS `GemmEx`, `CUBLAS_COMPUTE_32F`): the numerics of the CPU's BF16 GEMM up to
    /// the order of the sums.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bf16(
        &self,
        p: MatMul,
        a: u64,
        lda: usize,
        b: u64,
        ldb: usize,
        c: u64,
        beta: f32,
    ) -> Result<()> {
        if p.m == 0 || p.n == 0 {
            return Ok(());
        }
        let alpha = 1.0f32;
        #[allow(unsafe_code)]
        // SAFETY: the callers pass addresses of A and B's stored operands (BF16 bit patterns)
        // with leading dimensions `lda`, `ldb` and of C with m·n values; row-major
        // C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, so cuBLAS's A is our B and its B
        // our A, as in `sgemm`.
        let r = unsafe {
            blas_sys::cublasGemmEx(
                *self.blas.handle(),
                op(p.tb),
                op(p.ta),
                p.n as i32,
                p.m as i32,
                p.k as i32,
                (&alpha as *const f32).cast(),
                b as *const _,
                blas_sys::cudaDataType_t::CUDA_R_16BF,
                ldb as i32,
                a as *const _,
                blas_sys::cudaDataType_t::CUDA_R_16BF,
                lda as i32,
                (&beta as *const f32).cast(),
                c as *mut _,
                blas_sys::cudaDataType_t::CUDA_R_32F,
                p.n as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        blas_status(r, || format!("BF16 GEMM (FP32 C) {}×{}×{}", p.m, p.n, p.k))
    }

    /// The device address of `s` (for [`Device::sgemm`] and [`Device::gemm_bf16`]).
    pub fn addr<T: DeviceRepr>(&self, s: &CudaSlice<T>) -> u64 {
        let (ptr, _sync) = s.device_ptr(&self.stream);
        ptr
    }

    /// Waits until the stream's work is done (and reports an asynchronous kernel error).
    /// Counted in [`counters`]: a wait, and the time blocked. Managed blocks freed before it
    /// began may be handed out again after it ([`crate::managed::settled`]).
    pub fn sync(&self) -> Result<()> {
        COUNTERS[WAITS].fetch_add(1, Ordering::Relaxed);
        let epoch = self.defer.then(crate::managed::epoch);
        blocking(|| self.stream.synchronize()).map_err(driver("synchronize"))?;
        if let Some(e) = epoch {
            crate::managed::settled(e);
        }
        Ok(())
    }
}

/// cuBLAS's operation for a transposed (`t`) or plain operand.
fn op(t: bool) -> blas_sys::cublasOperation_t {
    if t {
        blas_sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        blas_sys::cublasOperation_t::CUBLAS_OP_N
    }
}

/// A cuBLAS status as a result, `what` naming the call.
fn blas_status(r: blas_sys::cublasStatus_t, what: impl FnOnce() -> String) -> Result<()> {
    if r == blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::Blas {
            lib: "cublas",
            op: what(),
            message: format!("{r:?}"),
        })
    }
}

/// The CUDA devices this process can see.
pub fn device_count() -> Result<usize> {
    libs::driver()?;
    let n = CudaContext::device_count().map_err(driver("count the devices"))?;
    Ok(n.max(0) as usize)
}

/// A grid-stride launch shape for `n` elements: 256 threads, at most 65,535 × 8 blocks.
pub fn elementwise(n: usize) -> cudarc::driver::LaunchConfig {
    elementwise_by(n, 1)
}

/// [`elementwise`] for a kernel that takes `per_thread` elements a thread in each pass of its
/// grid-stride loop: a `per_thread`-th of the blocks.
pub fn elementwise_by(n: usize, per_thread: usize) -> cudarc::driver::LaunchConfig {
    let blocks = n.div_ceil(256 * per_thread.max(1)).clamp(1, 65_535 * 8) as u32;
    cudarc::driver::LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}
