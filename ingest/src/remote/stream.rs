//! [`RemoteRead`]: an object's async byte stream as a blocking [`Read`].

use std::io::Read;

use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;

use crate::error::Error;

/// A blocking reader over an object's byte stream, one chunk at a time (no whole-object
/// buffer). `object_store` resumes a cut body by itself; an error that survives its retries
/// comes out as an `io::Error` wrapping [`Error::RemoteRead`] (URL and byte offset), which
/// [`Error::from_io`] unwraps.
pub struct RemoteRead {
    url: String,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    offset: u64,
}

impl std::fmt::Debug for RemoteRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRead")
            .field("url", &self.url)
            .field("offset", &self.offset)
            .finish()
    }
}

impl RemoteRead {
    pub(crate) fn new(
        url: String,
        stream: BoxStream<'static, object_store::Result<Bytes>>,
    ) -> Self {
        RemoteRead {
            url,
            stream,
            chunk: Bytes::new(),
            offset: 0,
        }
    }
}

impl Read for RemoteRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match super::block_on(self.stream.try_next()) {
                Ok(Some(b)) => self.chunk = b,
                Ok(None) => return Ok(0),
                Err(source) => {
                    tracing::warn!(url = %self.url, offset = self.offset, "remote read failed after retries: {source}");
                    return Err(std::io::Error::other(Error::RemoteRead {
                        url: self.url.clone(),
                        offset: self.offset,
                        source,
                    }));
                }
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        self.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_after_retries_names_the_url_and_the_byte_offset() {
        let chunks: Vec<object_store::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"{\"text\": \"a\"}\n")),
            Ok(Bytes::from_static(b"{\"text\"")),
            Err(object_store::Error::Generic {
                store: "test",
                source: "connection reset".into(),
            }),
        ];
        let mut r = RemoteRead::new(
            "s3://bucket/a.jsonl".into(),
            Box::pin(futures::stream::iter(chunks)),
        );
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(out.len(), 21);
        let msg = Error::from_io("unused", e).to_string();
        assert!(
            msg.starts_with("s3://bucket/a.jsonl: read failed at byte 21 after retries"),
            "{msg}"
        );
    }
}
