//! The responses fulcrum writes itself: errors (400–505), denies, redirects,
//! 429s and 408s, with the frontend's error files, and the reason phrase of
//! every status. Each one is counted by class in `http_responses`.

use crate::runtime::FrontendRt;

/// The reason phrase fulcrum writes for a status: RFC 9110's, and the common
/// registered extensions (WebDAV, RFC 6585, RFC 7725, RFC 8470); an unregistered
/// code gets its class's name.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        418 => "I'm a teapot",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// A complete small response fulcrum writes itself: `status`, optional extra
/// fields (each ending in CRLF), and the frontend's error file for the status
/// or `body` or a one-line text.
pub fn canned(
    front: &FrontendRt,
    status: u16,
    extra: &str,
    body: Option<&[u8]>,
    close: bool,
) -> Vec<u8> {
    let own = format!("{status} {}\n", reason(status));
    let (content_type, body): (&str, &[u8]) =
        match (body, front.error_pages.iter().find(|p| p.status == status)) {
            (Some(b), _) => ("text/plain", b),
            (None, Some(p)) => (p.content_type, &p.body),
            (None, None) if (300..400).contains(&status) => ("text/plain", b""),
            (None, None) => ("text/plain", own.as_bytes()),
        };
    let mut msg = format!(
        "HTTP/1.1 {status} {}\r\n{extra}content-type: {content_type}\r\ncontent-length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    )
    .into_bytes();
    msg.extend_from_slice(body);
    count_status(front, status);
    msg
}

/// Send a small error response and close (the request body, if any, was not read).
pub async fn error_reply<C: crate::net::io::Io + ?Sized>(
    client: &C,
    front: &FrontendRt,
    status: u16,
) {
    let msg = canned(front, status, "", None, true);
    let _ = crate::net::io::write_all(client, &msg, Some(front.client_timeout), |_| {}).await;
}

pub fn count_status(front: &FrontendRt, status: u16) {
    front.counters.http_responses.count(status);
}

/// The answer to a HEAD has its length but never its body: on a kept-alive
/// connection a body would be read as the next response.
pub fn strip_body(msg: &mut Vec<u8>) {
    if let Some(end) = msg.windows(4).position(|w| w == b"\r\n\r\n") {
        msg.truncate(end + 4);
    }
}

/// The 408 a connection gets when no request came within `http_request`.
pub fn timeout_reply(front: &FrontendRt) -> Vec<u8> {
    canned(front, 408, "", None, true)
}

#[cfg(test)]
mod tests {
    use super::reason;

    #[test]
    fn every_status_fulcrum_can_send_has_its_reason_phrase() {
        assert_eq!(reason(410), "Gone");
        assert_eq!(reason(413), "Content Too Large");
        assert_eq!(reason(421), "Misdirected Request");
        assert_eq!(reason(451), "Unavailable For Legal Reasons");
        assert_eq!(reason(511), "Network Authentication Required");
        // RFC 9110's 4xx and 5xx (deny may send any of them), and the common extensions.
        let registered = [
            400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416,
            417, 418, 421, 422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504,
            505, 506, 507, 508, 510, 511,
        ];
        for s in registered {
            assert!(
                !matches!(reason(s), "Client Error" | "Server Error"),
                "{s} has no phrase"
            );
        }
        assert_eq!(reason(499), "Client Error");
        assert_eq!(reason(599), "Server Error");
    }
}
