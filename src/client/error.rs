//! The client's errors: what went wrong and whether the operation may nevertheless have been
//! applied, the one question an application must answer before it retries. Must not decide
//! anything about retrying itself (that is `Client::call`'s job).

use std::fmt;
use std::io;

use super::conn::ConnError;
use super::{ErrorKind, Response};

/// Why an operation failed. Every error says whether the operation may nevertheless have
/// taken effect: see [`Error::may_have_applied`].
#[derive(Debug)]
pub enum Error {
    /// The contacted server is not the leader and the client could not reach the one it named
    /// (only when following hints is impossible, e.g. a [`Pipeline`]). Not applied.
    NotLeader {
        leader: Option<u64>,
        leader_addr: Option<String>,
    },
    /// No reply within the operation's timeout.
    Timeout { may_have_applied: bool },
    /// No server could be reached, or none could serve the request (no leader, no quorum),
    /// within the operation's timeout.
    Unavailable {
        reason: String,
        may_have_applied: bool,
    },
    /// A key, value or frame over a limit (`what`: "key", "value" or "frame"). Not applied.
    TooLarge { what: String, limit: u64 },
    /// A compare-and-swap's condition did not hold; `current` is the key's value and revision
    /// (`None`: absent). Nothing was changed.
    CasFailed { current: Option<(Vec<u8>, u64)> },
    /// The session expired while a write's outcome was unknown; a new session is registered.
    /// See the module documentation.
    SessionExpired { may_have_applied: bool },
    /// The server refused the request for a reason retrying here will not fix (invalid
    /// request, refused membership change, too many requests in flight, ...).
    Server(ErrorKind),
    /// The connection failed in a way the client did not retry.
    Io {
        error: io::Error,
        may_have_applied: bool,
    },
    /// The server's bytes were not a valid response, or TLS failed.
    Protocol {
        what: String,
        may_have_applied: bool,
    },
    /// The client itself was misconfigured (no endpoints, unreadable TLS files). Not applied.
    Config(String),
    /// A watch cannot start or go on from the revision it needs: the servers keep changes
    /// from revision `oldest` on only. Load the current state and watch from after it.
    Compacted { oldest: u64 },
}

impl Error {
    /// Whether the operation may have been applied even though it reported this error. `false`
    /// means it certainly was not (safe to retry anywhere); `true` means only a retry that the
    /// cluster can deduplicate is safe.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Error::NotLeader { .. }
            | Error::TooLarge { .. }
            | Error::CasFailed { .. }
            | Error::Config(_)
            | Error::Compacted { .. } => false,
            Error::Timeout { may_have_applied }
            | Error::Unavailable {
                may_have_applied, ..
            }
            | Error::SessionExpired { may_have_applied }
            | Error::Io {
                may_have_applied, ..
            }
            | Error::Protocol {
                may_have_applied, ..
            } => *may_have_applied,
            Error::Server(kind) => kind.may_have_applied(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let maybe = |m: bool| {
            if m {
                " (the write may have been applied)"
            } else {
                ""
            }
        };
        match self {
            Error::NotLeader {
                leader_addr: Some(a),
                ..
            } => write!(f, "not the leader: the leader is at {a}"),
            Error::NotLeader { .. } => f.write_str("not the leader and no leader known"),
            Error::Timeout { may_have_applied } => write!(
                f,
                "timed out waiting for a reply{}",
                maybe(*may_have_applied)
            ),
            Error::Unavailable {
                reason,
                may_have_applied,
            } => write!(
                f,
                "cluster unavailable: {reason}{}",
                maybe(*may_have_applied)
            ),
            Error::TooLarge { what, limit } => {
                write!(f, "{what} too large: the limit is {limit} bytes")
            }
            Error::CasFailed { current: None } => {
                f.write_str("compare-and-swap failed: the key is absent")
            }
            Error::CasFailed {
                current: Some((_, rev)),
            } => write!(
                f,
                "compare-and-swap failed: the key holds another value (revision {rev})"
            ),
            Error::SessionExpired { may_have_applied } => write!(
                f,
                "session expired while the write's outcome was unknown{}",
                maybe(*may_have_applied)
            ),
            Error::Server(kind) => write!(f, "{kind}"),
            Error::Io {
                error,
                may_have_applied,
            } => write!(f, "connection failed: {error}{}", maybe(*may_have_applied)),
            Error::Protocol {
                what,
                may_have_applied,
            } => write!(f, "{what}{}", maybe(*may_have_applied)),
            Error::Config(what) => f.write_str(what),
            Error::Compacted { oldest } => write!(
                f,
                "the changes to watch are no longer kept (the servers keep revision {oldest} on): reload and watch from after the load"
            ),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(super) fn conn_error(e: ConnError, may_have_applied: bool) -> Error {
    match e {
        ConnError::Timeout => Error::Timeout { may_have_applied },
        ConnError::Io(error) => Error::Io {
            error,
            may_have_applied,
        },
        ConnError::Protocol(what) | ConnError::Foreign(what) => Error::Protocol {
            what,
            may_have_applied,
        },
        ConnError::NoSuchHost(what) => Error::Io {
            error: io::Error::new(io::ErrorKind::NotFound, what),
            may_have_applied,
        },
    }
}

pub(super) fn unexpected(resp: Response, may_have_applied: bool) -> Error {
    Error::Protocol {
        what: format!("unexpected response: {resp:?}"),
        may_have_applied,
    }
}
