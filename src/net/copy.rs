//! User-space pump for one direction: read into a buffer, write it out. The
//! fallback when splice(2) is off (`global.splice = false`) or unavailable; same
//! contract as `splice::pump`.

use super::io::{self, Failed, Io};
use super::pump::{Activity, DirError, Tally};

const BUF: usize = 64 * 1024;

/// Move bytes from `src` to `dst` until `src` reaches end of stream.
/// Returns the number of bytes delivered to `dst`.
pub async fn pump<S: Io + ?Sized, D: Io + ?Sized>(
    src: &S,
    dst: &D,
    act: &Activity,
    tally: &Tally<'_>,
) -> Result<u64, DirError> {
    // Taken when the direction starts moving, so idle connections hold no buffer.
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = io::read(src, &mut buf).await.map_err(DirError::Read)?;
        if n == 0 {
            return Ok(total);
        }
        act.touch();
        write_all(dst, &buf[..n], act, Some(tally)).await?;
        total += n as u64;
    }
}

/// Write all of `data` to `dst`, counting it in `tally` if given.
pub async fn write_all<D: Io + ?Sized>(
    dst: &D,
    data: &[u8],
    act: &Activity,
    tally: Option<&Tally<'_>>,
) -> Result<(), DirError> {
    io::write_all(dst, data, None, |m| {
        if let Some(t) = tally {
            t.add(m as u64);
        }
        act.touch();
    })
    .await
    .map_err(|e| match e {
        Failed::Io(e) => DirError::Write(e),
        Failed::Timeout => DirError::Write(std::io::ErrorKind::TimedOut.into()),
    })
}
