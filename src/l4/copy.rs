//! User-space pump for one direction: read into a buffer, write it out. The
//! fallback when splice(2) is off (`global.splice = false`) or unavailable; same
//! contract as `splice::pump`.

use std::io;

use tokio::net::TcpStream;

use super::pump::{Activity, DirError, Tally};

const BUF: usize = 64 * 1024;

/// Move bytes from `src` to `dst` until `src` reaches end of stream.
/// Returns the number of bytes delivered to `dst`.
pub async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    act: &Activity,
    tally: &Tally<'_>,
) -> Result<u64, DirError> {
    // Taken when the direction starts moving, so idle connections hold no buffer.
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = loop {
            match src.try_read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    src.readable().await.map_err(DirError::Read)?;
                }
                Err(e) => return Err(DirError::Read(e)),
            }
        };
        if n == 0 {
            return Ok(total);
        }
        act.touch();
        write_all(dst, &buf[..n], act, Some(tally)).await?;
        total += n as u64;
    }
}

/// Write all of `data` to `dst`, counting it in `tally` if given.
pub async fn write_all(
    dst: &TcpStream,
    mut data: &[u8],
    act: &Activity,
    tally: Option<&Tally<'_>>,
) -> Result<(), DirError> {
    while !data.is_empty() {
        match dst.try_write(data) {
            Ok(m) => {
                data = &data[m..];
                if let Some(t) = tally {
                    t.add(m as u64);
                }
                act.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                dst.writable().await.map_err(DirError::Write)?;
            }
            Err(e) => return Err(DirError::Write(e)),
        }
    }
    Ok(())
}
