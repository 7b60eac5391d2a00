//! Whole HTTP bodies over WASI streams, for the webhook answer and the
//! outbound REST call alike: read one up to a limit, write one in chunks.
//!
//! A body's stream is a child resource: it is dropped before its body is
//! finished or dropped, which is why each stream lives in its own block.

use crate::wasi::http::types::{IncomingBody, OutgoingBody};
use crate::wasi::io::streams::StreamError;

/// Bytes asked of the stream per read.
const READ_CHUNK: u64 = 64 * 1024;
/// Bytes written per `blocking-write-and-flush` (the WASI limit is 4096).
const WRITE_CHUNK: usize = 4096;

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    /// The body or its stream was already taken.
    Unavailable,
    /// More than the limit arrived.
    TooLarge,
    /// The stream failed; the text is the host's.
    Failed(String),
}

/// Why a body could not be written whole.
#[derive(Debug)]
pub enum WriteError {
    /// The body's stream was already taken.
    Unavailable,
    /// The stream failed; the text is the host's.
    Failed(String),
}

/// Reads `body` to its end, refusing more than `limit` bytes.
pub fn read_all(body: IncomingBody, limit: usize) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    {
        let stream = body.stream().map_err(|()| ReadError::Unavailable)?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => {
                    out.extend_from_slice(&chunk);
                    if out.len() > limit {
                        return Err(ReadError::TooLarge);
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => return Err(ReadError::Failed(e.to_debug_string())),
            }
        }
    }
    Ok(out)
}

/// Writes all of `bytes` to `body`; the caller finishes the body.
pub fn write_all(body: &OutgoingBody, bytes: &[u8]) -> Result<(), WriteError> {
    let stream = body.write().map_err(|()| WriteError::Unavailable)?;
    for chunk in bytes.chunks(WRITE_CHUNK) {
        stream.blocking_write_and_flush(chunk).map_err(|e| WriteError::Failed(format!("{e:?}")))?;
    }
    Ok(())
}
