//! `Error`: the crate's one error type. Each module has its own typed error carrying the key,
//! tensor or offset that failed; this enum wraps them for callers that handle them alike.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
