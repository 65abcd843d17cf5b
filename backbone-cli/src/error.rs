//! What can go wrong, and the exit code scripts can rely on for each.

use std::fmt;

/// A failed command. Exit codes: 1 Redis or another failure, 2 bad usage (clap), 3 not found
/// (stream, group, entry), 4 refused (ACL `NOPERM`, authentication), 5 not confirmed.
#[derive(Debug)]
pub enum Failure {
    /// The stream, group or entry does not exist; says which.
    NotFound(String),
    /// Bad input that clap could not catch (a malformed id); says what and where.
    Usage(String),
    /// The user did not confirm a destructive command.
    NotConfirmed,
    /// Anything else (Redis unreachable, a refusal: see [`Failure::code`]).
    Backbone(backbone_core::Error),
}

impl Failure {
    /// The process's exit code.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Backbone(e) => {
                let text = e.to_string();
                let refused = [
                    "NOPERM",
                    "NoPerm",
                    "AuthenticationFailed",
                    "WRONGPASS",
                    "NOAUTH",
                ];
                if refused.iter().any(|r| text.contains(r)) {
                    4
                } else {
                    1
                }
            }
            Failure::Usage(_) => 2,
            Failure::NotFound(_) => 3,
            Failure::NotConfirmed => 5,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotFound(what) => write!(f, "not found: {what}"),
            Failure::Usage(what) => write!(f, "{what}"),
            Failure::NotConfirmed => write!(
                f,
                "not confirmed; nothing changed (pass --yes to skip the question)"
            ),
            Failure::Backbone(e) => write!(f, "{e}"),
        }
    }
}

impl From<backbone_core::Error> for Failure {
    fn from(e: backbone_core::Error) -> Self {
        Failure::Backbone(e)
    }
}

/// A redis-rs error, with what was being done.
pub fn redis(context: impl Into<String>, e: redis::RedisError) -> Failure {
    Failure::Backbone(backbone_core::Error::channel(context, e))
}
