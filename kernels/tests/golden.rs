//! FP8 codecs bit for bit against ml_dtypes: every code decoded, and ~4,000 f32 inputs per
//! format (ties, their neighbours, overflow, subnormals, specials, random) encoded both plainly
//! and saturating. Vectors from `tests/peers/fp8_golden.py` (committed in tests/fixtures/fp8).

use tokenmill_kernels::Fp8Format;

fn golden() -> serde_json::Value {
    let p = std::path::PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../tests/fixtures/fp8/golden.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

#[test]
fn fp8_codecs_match_ml_dtypes_bit_for_bit() {
    let g = golden();
    for (key, f) in [("e4m3", Fp8Format::E4M3), ("e5m2", Fp8Format::E5M2)] {
        let dec = g[key]["decode_f32_bits"].as_array().unwrap();
        assert_eq!(dec.len(), 256);
        for (c, want) in dec.iter().enumerate() {
            let want = f32::from_bits(want.as_u64().unwrap() as u32);
            let got = f.decode(c as u8);
            assert!(
                got.to_bits() == want.to_bits()
                    || (got.is_nan()
                        && want.is_nan()
                        && got.is_sign_negative() == want.is_sign_negative()),
                "{key} decode {c:#04x}: {got} vs {want}"
            );
        }
        let enc = g[key]["encode"].as_array().unwrap();
        assert!(enc.len() > 3500);
        let mut mismatches = Vec::new();
        for row in enc {
            let r = row.as_array().unwrap();
            let x = f32::from_bits(r[0].as_u64().unwrap() as u32);
            let (plain, sat) = (r[1].as_u64().unwrap() as u8, r[2].as_u64().unwrap() as u8);
            if f.encode(x) != plain || f.encode_saturating(x) != sat {
                mismatches.push((x, f.encode(x), plain, f.encode_saturating(x), sat));
            }
        }
        assert!(
            mismatches.is_empty(),
            "{key}: {} mismatches, first {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        );
    }
}

#[test]
fn bf16_matches_ml_dtypes_bit_for_bit() {
    let g = golden();
    let rows = g["bf16"].as_array().unwrap();
    assert!(rows.len() > 4000);
    for r in rows {
        let r = r.as_array().unwrap();
        let x = f32::from_bits(r[0].as_u64().unwrap() as u32);
        let want = r[1].as_u64().unwrap() as u16;
        let got = tokenmill_kernels::bf16::to_bf16(x);
        let both_nan = x.is_nan()
            && tokenmill_kernels::bf16::from_bf16(want).is_nan()
            && tokenmill_kernels::bf16::from_bf16(got).is_nan();
        assert!(
            got == want || both_nan,
            "{x:e} ({:#010x}): {got:#06x} vs {want:#06x}",
            x.to_bits()
        );
    }
}
