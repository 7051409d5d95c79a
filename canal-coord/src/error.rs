//! Errors of coordination sessions, split into transient (retry) and definite (report) kinds.

use std::path::PathBuf;

/// An error from a coordination backend or from the policies built on it.
///
/// [`CoordError::is_transient`] says whether retrying (possibly with a new session) can help;
/// [`CoordError::is_indeterminate`] says whether a write may or may not have been applied, in
/// which case the caller must re-read before deciding anything.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The node does not exist.
    #[error("node '{path}' does not exist")]
    NoNode {
        /// The path that was addressed.
        path: String,
    },
    /// The node already exists (create of a taken ephemeral, or of an existing persistent node).
    #[error("node '{path}' already exists")]
    NodeExists {
        /// The path that was addressed.
        path: String,
    },
    /// A compare-and-set or versioned delete found another version.
    #[error("node '{path}' is not at the expected version")]
    BadVersion {
        /// The path that was addressed.
        path: String,
    },
    /// A fenced write was refused: the fence node is gone or at another version, so the writer
    /// no longer owns it.
    #[error("write to '{path}' refused: fence '{fence}' is no longer held")]
    Fenced {
        /// The path that was to be written.
        path: String,
        /// The fence node (the running node) whose ownership check failed.
        fence: String,
    },
    /// A delete found children under the node.
    #[error("node '{path}' has children")]
    NotEmpty {
        /// The path that was addressed.
        path: String,
    },
    /// The session expired: its ephemeral nodes are gone. Open a new session.
    #[error("coordination session expired")]
    SessionExpired,
    /// The session was closed by its owner.
    #[error("coordination session closed")]
    SessionClosed,
    /// The request was sent but no answer came (timeout or connection loss after sending): the
    /// write may or may not have been applied. Re-read to settle it.
    #[error("{op} on '{path}' is indeterminate: {reason}")]
    Indeterminate {
        /// The operation (`create`, `put`, `delete`...).
        op: &'static str,
        /// The path that was addressed.
        path: String,
        /// What the backend reported.
        reason: String,
    },
    /// The backend could not be reached; nothing was applied. Retry later.
    #[error("coordination backend unavailable: {reason}")]
    Unavailable {
        /// What the backend reported.
        reason: String,
    },
    /// A path that the layout does not allow (not absolute, empty segment, trailing slash).
    #[error("invalid path '{path}': {reason}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// Reading or writing the local backend's data directory failed.
    #[error("local coordination store '{path}': {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Any other definite error reported by the backend.
    #[error("coordination backend error: {reason}")]
    Backend {
        /// What the backend reported.
        reason: String,
    },
}

impl CoordError {
    /// Whether retrying (after a pause, possibly on a new session) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CoordError::Unavailable { .. }
                | CoordError::Indeterminate { .. }
                | CoordError::SessionExpired
                | CoordError::SessionClosed
        )
    }

    /// Whether a write may have been applied although it reported failure.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, CoordError::Indeterminate { .. })
    }

    /// Whether the session is gone for good (a new one is needed).
    pub fn is_session_lost(&self) -> bool {
        matches!(self, CoordError::SessionExpired | CoordError::SessionClosed)
    }
}

/// Result alias for coordination operations.
pub type Result<T, E = CoordError> = std::result::Result<T, E>;
