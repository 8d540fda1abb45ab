//! HTTP/1.1 (`mode = "http"`): strict request heads (`codec`), chunked bodies
//! (`chunked`), response heads (`response`), and the per-connection loop
//! (`session`).

pub mod chunked;
pub mod codec;
pub mod framing;
pub mod park;
pub mod path;
pub mod persist;
pub mod pool;
pub mod reply;
pub mod response;
pub mod rewrite;
pub mod session;
