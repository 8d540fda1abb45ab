//! HTTP/1.1 (`mode = "http"`): the strict framing layer exists and is unit-tested
//! (`codec` for request heads, `chunked` for chunked bodies); the session loop that
//! uses them to proxy requests is not built yet, so `check` still refuses
//! `mode = "http"`.

pub mod chunked;
pub mod codec;
