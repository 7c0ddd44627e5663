//! Writes a batch of encoded documents to standard output in one locked
//! write, so documents of concurrent indexer instances never interleave.

use std::io::Write;

pub fn write_batch(batch: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(batch)?;
    out.flush()
}
