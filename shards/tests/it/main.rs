//! Integration tests of the shards crate: the loader over datasets written here.

mod loader;
