//! Every retry decision of the Redis output: which errors are worth another
//! attempt (the connection broke, timed out, or the server is loading or
//! busy) and which fail the batch at once (authentication, wrong key type,
//! any other answer the server gave on purpose).

use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Whether a failed round trip may succeed when tried again.
pub fn is_retryable(e: &RedisError) -> bool {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    matches!(
        e.kind(),
        ErrorKind::Server(
            ServerErrorKind::TryAgain
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
        )
    )
}
