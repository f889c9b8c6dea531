//! `tokenmill bench fp8-gemm`: the error of an FP8 GEMM whose accumulator keeps only a few
//! mantissa bits, against K, with and without promotion to FP32 every 128 products (the
//! DeepSeek-V3 report's observation on Hopper's tensor cores), and with an FP32 accumulator.

use tokenmill_kernels::Fp8Format;
use tokenmill_kernels::gemm::{Accumulator, fp8_gemm, reference_gemm, relative_error};
use tokenmill_kernels::quant::{ScaleRounding, quantize};
use tokenmill_kernels::rng::Rng;

/// `tokenmill bench fp8-gemm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rows of A and C.
    #[arg(long, default_value_t = 8)]
    pub m: usize,
    /// Columns of B and C.
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    /// Mantissa bits kept by the emulated tensor-core accumulator (H800: 14).
    #[arg(long, default_value_t = 14)]
    pub mantissa_bits: u32,
    /// Inner dimensions K to tabulate, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "128,512,1024,2048,4096,8192"
    )]
    pub ks: Vec<usize>,
}

/// The table: one row per K.
pub fn table(m: usize, n: usize, mantissa_bits: u32, ks: &[usize]) -> String {
    let mut s = format!(
        "| K | {mantissa_bits}-bit accumulator, no promotion | promoted to FP32 every 128 | FP32 accumulator |\n|---|---|---|---|\n"
    );
    let mut rng = Rng::new(12345);
    // Positive operands (as activations after SwiGLU and weights of one sign would be): the
    // accumulated sum grows with K, which is where a short accumulator loses bits.
    let mut next = move || rng.uniform() as f32 + 0.01;
    for &k in ks {
        let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
        let qa = quantize(&a, m, k, 1, 128, Fp8Format::E4M3, ScaleRounding::Exact);
        let qb = quantize(&b, k, n, 128, 128, Fp8Format::E4M3, ScaleRounding::Exact);
        let r = reference_gemm(&qa, &qb);
        let e = |acc| relative_error(&fp8_gemm(&qa, &qb, acc), &r);
        let limited = |promote_every| Accumulator {
            mantissa_bits,
            promote_every,
        };
        s.push_str(&format!(
            "| {k} | {:.2e} | {:.2e} | {:.2e} |\n",
            e(limited(None)),
            e(limited(Some(128))),
            e(Accumulator {
                mantissa_bits: 23,
                promote_every: None
            })
        ));
    }
    s
}

/// Runs `tokenmill bench fp8-gemm`.
pub fn run(a: Args) -> anyhow::Result<()> {
    print!("{}", table(a.m, a.n, a.mantissa_bits, &a.ks));
    Ok(())
}
