//! Main-content extraction (HTML → article text).
