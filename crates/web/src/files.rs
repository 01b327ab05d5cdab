//! Sends a file that the boot crate opened (by the one rule for what may be served) over
//! HTTP: whole, or one byte range, and HEAD with the same headers. Firmware needs exactly this:
//! EDK2's HTTP Boot asks HEAD first and relies on Content-Length on every answer; iPXE and
//! EDK2 resume with single ranges. Multiple ranges are answered with the whole file, which
//! RFC 9110 (14.2) allows.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bootherd_tftp::FileContent;

/// Bytes read per step. Large enough that a 64 MiB initrd is a few hundred reads.
const CHUNK: u64 = 256 << 10;

/// The part of the file a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Whole,
    /// First and last byte, inclusive, already clamped to the file.
    Range(u64, u64),
    Unsatisfiable,
}

/// Parses a `Range` header against a file of `len` bytes (RFC 9110 14.1.2). Anything this does
/// not understand means the whole file, as the RFC lets a server ignore Range.
fn wanted(range: Option<&HeaderValue>, len: u64) -> Wanted {
    let Some(spec) = range
        .and_then(|r| r.to_str().ok())
        .and_then(|r| r.trim().strip_prefix("bytes="))
    else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match parse(last) {
            Some(0) => Wanted::Unsatisfiable,
            Some(n) if len > 0 => Wanted::Range(len.saturating_sub(n), len - 1),
            Some(_) => Wanted::Unsatisfiable,
            None => Wanted::Whole,
        },
        // bytes=A- and bytes=A-B
        (false, _) => {
            let Some(start) = parse(first) else {
                return Wanted::Whole;
            };
            let end = if last.is_empty() {
                Some(u64::MAX)
            } else {
                parse(last)
            };
            match end {
                None => Wanted::Whole,
                Some(end) if end < start => Wanted::Whole,
                Some(_) if start >= len => Wanted::Unsatisfiable,
                Some(end) => Wanted::Range(start, end.min(len - 1)),
            }
        }
        (true, true) => Wanted::Whole,
    }
}

/// The response for `content`, as `method` and the request's `headers` ask.
pub(crate) fn respond(
    content: Arc<dyn FileContent>,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let len = content.len();
    let (status, start, count) = match wanted(headers.get(header::RANGE), len) {
        Wanted::Whole => (StatusCode::OK, 0, len),
        Wanted::Range(first, last) => (StatusCode::PARTIAL_CONTENT, first, last - first + 1),
        Wanted::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [
                    (header::CONTENT_RANGE, format!("bytes */{len}")),
                    (header::CONTENT_LENGTH, "0".to_string()),
                ],
            )
                .into_response();
        }
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(chunks(content, start, count))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let out = response.headers_mut();
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let range = format!("bytes {start}-{}/{len}", start + count - 1);
        if let Ok(value) = HeaderValue::from_str(&range) {
            out.insert(header::CONTENT_RANGE, value);
        }
    }
    response
}

/// `count` bytes from `start`, read one chunk at a time (off the async threads when the file is
/// read from disk). A file that shrinks while it is sent ends the body with an error, so the
/// client sees a short transfer rather than a silently truncated file.
fn chunks(
    content: Arc<dyn FileContent>,
    start: u64,
    count: u64,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    futures_util::stream::try_unfold(
        (content, start, start + count),
        |(content, offset, end)| async move {
            if offset >= end {
                return Ok(None);
            }
            let want = (end - offset).min(CHUNK) as usize;
            let read = move |content: &Arc<dyn FileContent>| {
                let mut buf = vec![0u8; want];
                let n = content.read_at(offset, &mut buf)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>(buf)
            };
            let buf = if content.in_memory() {
                read(&content)?
            } else {
                let reader = content.clone();
                tokio::task::spawn_blocking(move || read(&reader))
                    .await
                    .map_err(std::io::Error::other)??
            };
            if buf.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was being sent",
                ));
            }
            let next = offset + buf.len() as u64;
            Ok(Some((Bytes::from(buf), (content, next, end))))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn ranges_as_firmware_sends_them() {
        let w = |s: &str| wanted(Some(&value(s)), 1000);
        assert_eq!(wanted(None, 1000), Wanted::Whole);
        assert_eq!(w("bytes=0-99"), Wanted::Range(0, 99));
        assert_eq!(w("bytes=900-"), Wanted::Range(900, 999));
        assert_eq!(w("bytes=900-5000"), Wanted::Range(900, 999));
        assert_eq!(w("bytes=-100"), Wanted::Range(900, 999));
        assert_eq!(w("bytes=-5000"), Wanted::Range(0, 999));
        assert_eq!(w("bytes=1000-"), Wanted::Unsatisfiable);
        assert_eq!(w("bytes=-0"), Wanted::Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=x-",
            "bytes=-",
            "bytes",
        ] {
            assert_eq!(w(ignored), Wanted::Whole, "{ignored}");
        }
        assert_eq!(wanted(Some(&value("bytes=0-")), 0), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some(&value("bytes=-1")), 0), Wanted::Unsatisfiable);
    }
}
