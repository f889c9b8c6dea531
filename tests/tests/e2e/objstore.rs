//! Inputs in object stores: `tokenmill build` from `s3://` (moto's S3 server, started here)
//! and from `http://` (`tests/peers/range_server.py`, which drops the first connection of each
//! file midway so that object_store's retry resumes it) builds the dataset a local build of
//! the same files builds: the same shard bytes and counts, with the URLs as sources; and a
//! build written to `s3://` (`--out s3://…`) holds, object for object, the local build's files.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokenmill_ingest::{DocumentReader, ReadConfig};
use tokenmill_tests::{data, repo_root, tokenmill_bin};

/// The real files served: JSONL (gzip) and WARC (gzip), with the names they have in the data.
const FILES: &[&str] = &[
    "jsonl/cc_en_head-0091.jsonl.gz",
    "jsonl/dolma-CC-MAIN-2019-30-697docs.jsonl.gz",
    "jsonl/olmo-c4_100_domains-theguardian.jsonl.gz",
    "warc/dolma-wget-sample-0000.warc.gz",
    "warc/whirlwind-cc-main-2024-22.warc.gz",
    "warc/whirlwind-cc-main-2024-22.warc.wet.gz",
];

/// A peer process, killed when dropped.
struct Peer {
    child: Child,
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where moto is installed (`python3 -m pip install --target DIR 'moto[server]==5.2.5'`).
fn moto_dir() -> PathBuf {
    match std::env::var_os("TOKENMILL_MOTO") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/tokenmill/moto"),
    }
}

/// moto's S3 server on a free port; fails with how to install it when it is missing.
fn start_moto() -> Peer {
    start_moto_with(&[])
}

/// [`start_moto`] with extra environment (moto's settings).
fn start_moto_with(env: &[(&str, &str)]) -> Peer {
    let dir = moto_dir();
    assert!(
        dir.join("moto").join("server.py").is_file(),
        "moto not found in {d}: install it with `python3 -m pip install --target {d} \
         'moto[server]==5.2.5'` (.ci/run does), or set TOKENMILL_MOTO",
        d = dir.display()
    );
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .env("PYTHONPATH", &dir)
        // Multipart uploads of small test files (real S3 wants parts of 5 MiB).
        .env("S3_UPLOAD_PART_MIN_SIZE", "65536")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed to run moto's S3 server");
    let peer = Peer { child, port };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "moto's server did not listen on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    peer
}

/// `range_server.py` over `root`, dropping the first GET of each file midway.
fn start_range_server(root: &Path) -> Peer {
    let script = repo_root().join("tests/peers/range_server.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(root)
        .arg("--drop-first")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed to run tests/peers/range_server.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .strip_prefix("READY ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("range_server.py did not start: {line:?}"));
    Peer { child, port }
}

/// The environment tokenmill reads moto on `port` with (any credentials pass).
fn s3_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ]
}

/// One HTTP/1.1 request (`Connection: close`): the status and the body.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let status = std::str::from_utf8(&resp[9..12]).unwrap().parse().unwrap();
    (status, resp[head_end..].to_vec())
}

/// The served files copied into `dir/crawl/` (one folder, so local and remote sort alike).
fn stage_files(dir: &Path) -> PathBuf {
    let crawl = dir.join("crawl");
    std::fs::create_dir_all(&crawl).unwrap();
    for f in FILES {
        let src = data(f);
        std::fs::copy(&src, crawl.join(src.file_name().unwrap())).unwrap();
    }
    crawl
}

fn names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|f| f.rsplit('/').next().unwrap())
}

/// `tokenmill build` of `inputs` into `out`: the wall time and the stats.
fn build(inputs: &[String], out: &Path, env: &[(&str, String)]) -> (Duration, serde_json::Value) {
    let start = Instant::now();
    let o = Command::new(tokenmill_bin())
        .arg("build")
        .args(inputs)
        .arg("--tokenizer")
        .arg(data("tokenizers/gpt2.tokenizer.json"))
        .arg("--out")
        .arg(out)
        .args(["--threads", "2", "--json"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "build of {inputs:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (start.elapsed(), serde_json::from_slice(&o.stdout).unwrap())
}

/// The files of a dataset with `ext`, sorted by name.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    v
}

/// Every `source` of the dataset's provenance, in shard order.
fn sources(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for p in files(dir, ".prov.parquet") {
        let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&p).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for b in r {
            let b = b.unwrap();
            let col = arrow::compute::cast(
                b.column_by_name("source").unwrap(),
                &arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let col = col
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            out.extend(col.iter().map(|s| s.unwrap().to_string()));
        }
    }
    out
}

/// Same shard bytes, same counts; the remote sources are the local ones under `url_base`.
fn assert_same_dataset(local: &Path, remote: &Path, local_base: &str, url_base: &str) {
    for ext in [".bin", ".idx"] {
        let (a, b) = (files(local, ext), files(remote, ext));
        assert!(!a.is_empty());
        let name = |p: &PathBuf| p.file_name().unwrap().to_owned();
        assert_eq!(
            a.iter().map(name).collect::<Vec<_>>(),
            b.iter().map(name).collect::<Vec<_>>()
        );
        for (x, y) in a.iter().zip(&b) {
            assert!(
                std::fs::read(x).unwrap() == std::fs::read(y).unwrap(),
                "{} differs",
                y.display()
            );
        }
    }
    let (a, b) = (sources(local), sources(remote));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(y, &x.replacen(local_base, url_base, 1), "provenance source");
    }
}

fn stat<'a>(v: &'a serde_json::Value, k: &str) -> &'a serde_json::Value {
    v.get(k)
        .unwrap_or_else(|| panic!("no `{k}` in the build stats: {v}"))
}

#[test]
fn s3_build_equals_the_local_build() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let crawl = stage_files(dir.path());
    assert_eq!(
        http(moto.port, "PUT", "/tokenmill", b"").0,
        200,
        "create bucket"
    );
    for n in names() {
        let body = std::fs::read(crawl.join(n)).unwrap();
        let (status, resp) = http(moto.port, "PUT", &format!("/tokenmill/crawl/{n}"), &body);
        assert_eq!(
            status,
            200,
            "upload {n}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    let env = s3_env(moto.port);
    let local_base = format!("{}/", crawl.display());
    let (t_local, s_local) = build(
        &[
            format!("{local_base}*.jsonl.gz"),
            format!("{local_base}*.warc*.gz"),
        ],
        &dir.path().join("local"),
        &[],
    );
    let remote = dir.path().join("s3");
    let (t_s3, s_s3) = build(
        &[
            "s3://tokenmill/crawl/*.jsonl.gz".into(),
            "s3://tokenmill/crawl/*.warc*.gz".into(),
        ],
        &remote,
        &env,
    );
    eprintln!(
        "build of {} files: local {:.2} s, s3 (moto) {:.2} s",
        FILES.len(),
        t_local.as_secs_f64(),
        t_s3.as_secs_f64()
    );
    for k in ["documents_read", "documents_written", "tokens", "inputs"] {
        assert_eq!(stat(&s_local, k), stat(&s_s3, k), "{k}");
    }
    assert_eq!(stat(&s_s3, "inputs"), FILES.len());
    assert_same_dataset(
        &dir.path().join("local"),
        &remote,
        &local_base,
        "s3://tokenmill/crawl/",
    );
    let plan = std::fs::read_to_string(remote.join(".build/plan.json")).unwrap();
    assert!(
        plan.contains("s3://tokenmill/crawl/cc_en_head-0091.jsonl.gz"),
        "{plan}"
    );

    // The same objects named by a Common-Crawl-style listing (`warc.paths.gz`, relative keys,
    // itself in the bucket) build the same dataset.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut sorted: Vec<&str> = names().collect();
    sorted.sort();
    writeln!(gz, "# a listing").unwrap();
    for n in &sorted {
        writeln!(gz, "crawl/{n}").unwrap();
    }
    let listing = gz.finish().unwrap();
    assert_eq!(
        http(
            moto.port,
            "PUT",
            "/tokenmill/listing/warc.paths.gz",
            &listing
        )
        .0,
        200
    );
    let listed_build = |list: &str, base: Option<&str>, out: &Path| {
        let mut c = Command::new(tokenmill_bin());
        c.args(["build", "--paths-file", list, "--tokenizer"])
            .arg(data("tokenizers/gpt2.tokenizer.json"))
            .arg("--out")
            .arg(out)
            .args(["--threads", "2", "--json"])
            .envs(env.iter().map(|(k, v)| (k, v)));
        if let Some(b) = base {
            c.args(["--paths-base", b]);
        }
        c.output().unwrap()
    };
    let listed = dir.path().join("listed");
    let o = listed_build(
        "s3://tokenmill/listing/warc.paths.gz",
        Some("s3://tokenmill/"),
        &listed,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s_listed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["documents_read", "documents_written", "tokens", "inputs"] {
        assert_eq!(stat(&s_local, k), stat(&s_listed, k), "{k}");
    }
    assert_same_dataset(
        &dir.path().join("local"),
        &listed,
        &local_base,
        "s3://tokenmill/crawl/",
    );
    // A listing naming a missing object, relative lines without a base, a missing bucket: each
    // an error naming what is wrong.
    std::fs::write(
        dir.path().join("bad.paths"),
        format!(
            "crawl/{}
crawl/missing.warc.gz
",
            sorted[0]
        ),
    )
    .unwrap();
    let bad = dir.path().join("bad.paths").display().to_string();
    let o = listed_build(&bad, Some("s3://tokenmill"), &dir.path().join("x"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("s3://tokenmill/crawl/missing.warc.gz")
            && err.contains("no such object"),
        "{err}"
    );
    let o = listed_build(&bad, None, &dir.path().join("x"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("line 1") && err.contains("--paths-base"),
        "{err}"
    );
    let o = Command::new(tokenmill_bin())
        .args([
            "build",
            "s3://no-such-bucket/crawl/x.jsonl.gz",
            "--tokenizer",
        ])
        .arg(data("tokenizers/gpt2.tokenizer.json"))
        .arg("--out")
        .arg(dir.path().join("y"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("s3://no-such-bucket/crawl/x.jsonl.gz"),
        "{err}"
    );

    // Wrong credentials (a moto that checks them: `INITIAL_NO_AUTH_ACTION_COUNT=0`) and an
    // unreachable store (a closed port, retries cut to 1 within 2 s): errors naming the URL.
    let strict = start_moto_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let closed = free_port();
    for (port, what) in [(strict.port, "credentials"), (closed, "unreachable")] {
        let mut env2 = s3_env(port);
        env2.push(("TOKENMILL_REMOTE_RETRIES", "1".into()));
        env2.push(("TOKENMILL_REMOTE_RETRY_SECONDS", "2".into()));
        let t = Instant::now();
        let o = Command::new(tokenmill_bin())
            .args(["build", "s3://tokenmill/crawl/*.jsonl.gz", "--tokenizer"])
            .arg(data("tokenizers/gpt2.tokenizer.json"))
            .arg("--out")
            .arg(dir.path().join(what))
            .envs(env2.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("s3://tokenmill/crawl/*.jsonl.gz"),
            "{what}: {err}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what}: {:?}",
            t.elapsed()
        );
        eprintln!("{what}: {}", err.trim());
    }
    drop(strict);

    // A pattern that lists nothing is an error naming it.
    let o = Command::new(tokenmill_bin())
        .args(["build", "s3://tokenmill/nothing/*.jsonl", "--tokenizer"])
        .arg(data("tokenizers/gpt2.tokenizer.json"))
        .arg("--out")
        .arg(dir.path().join("none"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s3://tokenmill/nothing/*.jsonl"), "{err}");
}

#[test]
fn http_build_with_dropped_connections_equals_the_local_build() {
    let dir = tempfile::tempdir().unwrap();
    let crawl = stage_files(dir.path());
    let server = start_range_server(dir.path());
    let base = format!("http://127.0.0.1:{}/crawl/", server.port);
    let local_base = format!("{}/", crawl.display());
    let mut sorted: Vec<&str> = names().collect();
    sorted.sort();
    let (t_local, s_local) = build(
        &sorted
            .iter()
            .map(|n| format!("{local_base}{n}"))
            .collect::<Vec<_>>(),
        &dir.path().join("local"),
        &[],
    );
    let remote = dir.path().join("http");
    let (t_http, s_http) = build(
        &sorted
            .iter()
            .map(|n| format!("{base}{n}"))
            .collect::<Vec<_>>(),
        &remote,
        &[],
    );
    eprintln!(
        "build of {} files: local {:.2} s, http with a dropped connection per file {:.2} s",
        FILES.len(),
        t_local.as_secs_f64(),
        t_http.as_secs_f64()
    );
    for k in ["documents_read", "documents_written", "tokens"] {
        assert_eq!(stat(&s_local, k), stat(&s_http, k), "{k}");
    }
    assert_same_dataset(&dir.path().join("local"), &remote, &local_base, &base);
    // Every file's first GET was cut midway and resumed by a range request.
    let stats: serde_json::Value =
        serde_json::from_slice(&http(server.port, "GET", "/__stats", b"").1).unwrap();
    for n in names() {
        let s = &stats[format!("crawl/{n}")];
        assert_eq!(s["dropped"], 1, "{n}: {stats}");
        assert!(s["gets"].as_u64().unwrap() >= 2, "{n}: {stats}");
    }
}

#[test]
fn remote_jsonl_and_gzip_warc_stream_and_an_oversized_plain_warc_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let crawl = stage_files(dir.path());
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(
        std::fs::File::open(data("warc/dolma-wget-sample-0000.warc.gz")).unwrap(),
    )
    .read_to_end(&mut plain)
    .unwrap();
    std::fs::write(crawl.join("plain.warc"), plain).unwrap();
    let excerpt = "resiliparse-cc-main-2020-34-excerpt.warc.gz";
    std::fs::copy(data(&format!("warc/{excerpt}")), crawl.join(excerpt)).unwrap();
    // A damaged copy: 64 bytes overwritten in the middle (a corrupt member the reader skips
    // and resynchronises after) and 100 KiB of zeros at the end (padding, not a record).
    let mut damaged = std::fs::read(data("warc/dolma-wget-sample-0000.warc.gz")).unwrap();
    let mid = damaged.len() / 2;
    damaged[mid..mid + 64].fill(0xAA);
    damaged.extend(std::iter::repeat_n(0u8, 100 << 10));
    std::fs::write(crawl.join("damaged.warc.gz"), &damaged).unwrap();
    let server = start_range_server(dir.path());
    let base = format!("http://127.0.0.1:{}/crawl/", server.port);
    let opts = ReadConfig::default();
    let count = |p: &Path| {
        let mut r = DocumentReader::open(p, &opts).unwrap();
        let rows: usize = (&mut r).map(|b| b.unwrap().num_rows()).sum();
        (rows, r.stats().read(), r.source().to_string())
    };
    let name = "dolma-CC-MAIN-2019-30-697docs.jsonl.gz";
    let url = format!("{base}{name}");
    let (rows, read, source) = count(Path::new(&url));
    let (local_rows, local_read, _) = count(&data(&format!("jsonl/{name}")));
    assert_eq!((rows, read), (local_rows, local_read));
    assert_eq!(read, 697);
    assert_eq!(source, url);

    // A remote gzip WARC streams member by member: read under a 1,000-byte fetch cap (its
    // 200+ KB are never held whole), every record as the local read gives it, offsets included,
    // though the server cuts the first transfer midway.
    // A 16 KiB window: members larger than it grow it, and bytes behind go.
    let small = ReadConfig {
        chat: None,
        remote_max_bytes: 1000,
        remote_window_bytes: 16 << 10,
        ..Default::default()
    };
    for name in [
        "dolma-wget-sample-0000.warc.gz",
        "resiliparse-cc-main-2020-34-excerpt.warc.gz",
        "damaged.warc.gz",
    ] {
        let warc = format!("{base}{name}");
        let rows = |p: &Path, o: &ReadConfig| {
            let mut r = DocumentReader::open(p, o).unwrap();
            let mut out = Vec::new();
            for b in &mut r {
                let b = b.unwrap();
                let col = |n: &str| {
                    arrow::compute::cast(
                        b.column_by_name(n).unwrap(),
                        &arrow::datatypes::DataType::Utf8,
                    )
                    .unwrap()
                };
                let (id, off, text) = (col("id"), col("offset"), col("text"));
                let s = |a: &arrow::array::ArrayRef, i: usize| {
                    a.as_any()
                        .downcast_ref::<arrow::array::StringArray>()
                        .unwrap()
                        .value(i)
                        .to_string()
                };
                for i in 0..b.num_rows() {
                    out.push((s(&id, i), s(&off, i), s(&text, i)));
                }
            }
            let st = r.stats();
            (out, st.read(), st.skipped.by_reason.clone())
        };
        let (remote, n, remote_skips) = rows(Path::new(&warc), &small);
        let (local, m, local_skips) = rows(&crawl.join(name), &opts);
        assert!(
            n > 10 && n == m && remote.len() == local.len(),
            "{name}: {n} vs {m} records"
        );
        assert_eq!(remote_skips, local_skips, "{name}: the same skips");
        if name == "damaged.warc.gz" {
            assert!(!local_skips.is_empty(), "the damage is a counted skip");
        }
        eprintln!("{name}: {n} records, {} documents streamed", remote.len());
        assert!(remote == local, "{name}: the streamed records differ");
    }
    // A plain (uncompressed) remote WARC is fetched whole, so the cap refuses it.
    let warc = format!("{base}plain.warc");
    let err = DocumentReader::open(Path::new(&warc), &small)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&warc) && err.contains("remote_max_bytes"),
        "{err}"
    );

    let missing = format!("{base}missing.jsonl.gz");
    let err = DocumentReader::open(Path::new(&missing), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&missing), "{err}");
}

/// Runs `op` (`list`, `get KEY`, `delete KEY`) on moto's bucket `tokenmill` through boto3
/// (installed with moto), signed as tokenmill signs: `list` prints `size key` lines, `get`
/// the object's bytes.
fn s3(port: u16, op: &[&str]) -> Vec<u8> {
    let script = r#"
import sys, boto3
c = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test",
                 aws_secret_access_key="test", region_name="us-east-1")
op = sys.argv[2]
if op == "list":
    for o in c.list_objects_v2(Bucket="tokenmill", Prefix=sys.argv[3]).get("Contents", []):
        print(o["Size"], o["Key"])
elif op == "get":
    sys.stdout.buffer.write(c.get_object(Bucket="tokenmill", Key=sys.argv[3])["Body"].read())
elif op == "delete":
    c.delete_object(Bucket="tokenmill", Key=sys.argv[3])
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}"))
        .args(op)
        .env("PYTHONPATH", moto_dir())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "boto3 {op:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// The keys and sizes under `prefix`, sorted.
fn list(port: u16, prefix: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = String::from_utf8(s3(port, &["list", prefix]))
        .unwrap()
        .lines()
        .map(|l| {
            let (n, k) = l.split_once(' ').unwrap();
            (k.to_string(), n.parse().unwrap())
        })
        .collect();
    v.sort();
    v
}

/// A dataset directory's files (relative, `/`-separated), without the work state.
fn dataset_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_build_written_to_s3_holds_the_local_build() {
    let moto = start_moto();
    let dir = tempfile::tempdir().unwrap();
    let crawl = stage_files(dir.path());
    assert_eq!(http(moto.port, "PUT", "/tokenmill", b"").0, 200);
    let mut env = s3_env(moto.port);
    // Files over 256 KiB go up in parts of 256 KiB (multipart), the others in one PUT.
    env.push(("TOKENMILL_S3_PART_BYTES", (256 << 10).to_string()));
    let inputs = [
        format!("{}/*.jsonl.gz", crawl.display()),
        format!("{}/*.warc*.gz", crawl.display()),
    ];
    let local = dir.path().join("local");
    build(&inputs, &local, &[]);
    let url = "s3://tokenmill/datasets/web";
    let publish = || {
        let o = Command::new(tokenmill_bin())
            .arg("build")
            .args(&inputs)
            .arg("--tokenizer")
            .arg(data("tokenizers/gpt2.tokenizer.json"))
            .args(["--out", url, "--stage"])
            .arg(dir.path().join("stage"))
            .args(["--threads", "2"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        said
    };
    let said = publish();
    let ours = dataset_files(&local);
    assert!(
        said.contains(&format!(
            "published {url} from {}: {} files, {} uploaded",
            dir.path().join("stage").display(),
            ours.len(),
            ours.len()
        )),
        "{said}"
    );
    // Object for object the local build's files, byte for byte (stats.json holds timings).
    let objects = list(moto.port, "datasets/web/");
    let keys: Vec<String> = objects
        .iter()
        .map(|(k, _)| k.trim_start_matches("datasets/web/").to_string())
        .collect();
    assert_eq!(keys, ours);
    let mut multipart = 0;
    for (key, size) in &objects {
        let rel = key.trim_start_matches("datasets/web/");
        let body = s3(moto.port, &["get", key]);
        assert_eq!(body.len() as u64, *size);
        multipart += usize::from(*size > 256 << 10);
        if rel != "stats.json" {
            assert!(
                body == std::fs::read(local.join(rel)).unwrap(),
                "{key} differs from the local build's"
            );
        }
    }
    assert!(multipart > 0, "some file went up in parts: {objects:?}");
    // A rerun finds everything there: only stats.json (the rerun's timings) and the manifest
    // (deleted first, uploaded last) go up again.
    let said = publish();
    assert!(
        said.contains(&format!(
            "2 uploaded (0.0 MB), {} already there",
            ours.len() - 2
        )),
        "{said}"
    );
    // A shard object lost remotely is uploaded again, with those two.
    let shard = ours.iter().find(|f| f.ends_with(".bin")).unwrap();
    s3(moto.port, &["delete", &format!("datasets/web/{shard}")]);
    let said = publish();
    assert!(said.contains("3 uploaded"), "{said}");
    assert_eq!(list(moto.port, "datasets/web/").len(), ours.len());
    // Read-only stores are refused.
    let o = Command::new(tokenmill_bin())
        .arg("build")
        .args(&inputs)
        .arg("--tokenizer")
        .arg(data("tokenizers/gpt2.tokenizer.json"))
        .args(["--out", "https://example.org/ds"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("read-only"), "{err}");
}
