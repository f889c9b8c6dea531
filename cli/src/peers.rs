//! The Python peers (HF `tokenizers`, `transformers` + `torch`, …) that benchmarks and tests
//! run side by side with tokenmill: one place that says where their interpreter is.

use std::path::{Path, PathBuf};

/// The virtual environment `tests/peers/README.md` makes, relative to the repository root.
pub const VENV_PYTHON: &str = ".venv-peers/bin/python";

/// The environment variable that names the peers' Python explicitly.
pub const PYTHON_ENV: &str = "TOKENMILL_PEERS_PYTHON";

/// The peers' Python: `explicit` if given, else `$TOKENMILL_PEERS_PYTHON`, else
/// `root/.venv-peers/bin/python` when it exists; `None` when there is none.
pub fn python(explicit: Option<PathBuf>, root: &Path) -> Option<PathBuf> {
    explicit
        .or_else(|| std::env::var_os(PYTHON_ENV).map(PathBuf::from))
        .or_else(|| Some(root.join(VENV_PYTHON)).filter(|p| p.exists()))
}
