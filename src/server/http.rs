//! HTTP helpers every handler uses: the response [`Body`], JSON responses, reading a
//! request body (bounded) and a JSON body, and percent-decoding a path segment.

use bytes::Bytes;
use http_body_util::{BodyExt as _, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;

use super::ApiError;
use super::sse::EventStream;

/// A response body: whole, or a stream of server-sent events.
pub type Body = Either<Full<Bytes>, EventStream>;

/// A JSON response.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("response types always serialize");
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A path segment, percent-decoded (session ids may be Chinese).
pub(super) fn decode_segment(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::invalid("bad percent-encoding in the path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::invalid("the path is not UTF-8"))
}

/// Reads a request body of at most `limit` bytes.
pub(super) async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    read_body_or(req, limit, || too_large(limit)).await
}

/// Reads a request body of at most `limit` bytes; a longer one (by its declared length
/// before a byte is read, else as soon as it passes the limit) is `too_large()`'s error.
pub(super) async fn read_body_or(
    req: Request<Incoming>,
    limit: usize,
    too_large: impl Fn() -> ApiError,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::invalid(format!("the body could not be read: {error}"))),
    }
}

/// 413 `payload_too_large`: a body over `limit` bytes.
pub(super) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is larger than {limit} bytes"),
    )
}

/// Reads and parses a JSON body; an empty body reads as `{}` when `empty_ok`.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
    limit: usize,
    empty_ok: bool,
) -> Result<T, ApiError> {
    let body = read_body(req, limit).await?;
    if empty_ok && body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}").map_err(|e| ApiError::from_json(&e));
    }
    parse_json(&body)
}

/// Parses a JSON body that must not be empty.
pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is empty; send a JSON object",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::from_json(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode_segment("%E5%AE%A2%E6%88%B7-1").unwrap(), "客户-1");
        assert!(decode_segment("%zz").is_err());
        assert!(decode_segment("%ff").is_err());
    }
}
