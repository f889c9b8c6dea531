//! The streaming loader: what a training job reads from.
//!
//! * Exact: every sample once per epoch, in an order fixed by `(seed, epoch)` ([`permutation`]).
//! * Cheap: no per-sample or per-document array; samples are computed from the memory-mapped
//!   indexes ([`packing`], [`space`]); a blend keeps one period of its pattern ([`blend`]).
//! * Distributed and elastic: the global stream does not depend on the number of ranks; rank
//!   `r` of `W` takes the `r`-th slice of each global batch.
//! * Resumable: [`LoaderState`] = (epoch, samples consumed, step).
//! * Provenance-carrying: each sample lists its documents ([`Span`]), resolvable to id, source,
//!   offset and URL.

pub mod blend;
pub mod packing;
pub mod permutation;
pub mod prefetch;
pub mod simulate;
pub mod space;
pub mod stream;

pub use packing::{Packing, Span};
pub use prefetch::Prefetcher;
pub use stream::{
    Batch, DatasetSpec, Loader, LoaderConfig, LoaderState, Sample, Shuffle, find_documents,
};
