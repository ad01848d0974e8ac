//! Server-sent event streams: the response that carries them, the framing of one event,
//! and the body that hands the events to the connection as the turn produces them.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Either;
use hyper::Response;
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use tokio::sync::mpsc;

use super::conns;
use super::http::Body;

/// A streaming response of server-sent events fed by the returned sender.
pub(super) fn event_stream_response() -> (mpsc::Sender<Bytes>, Response<Body>) {
    let (tx, rx) = mpsc::channel(64);
    let mut response = Response::new(Either::Right(EventStream { rx, busy: None }));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx buffer responses unless told not to.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    (tx, response)
}

/// One server-sent event: `event: NAME` (when named) and a `data:` line.
pub(super) fn sse_event(name: Option<&str>, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + 32);
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    // JSON has no raw newlines, but be safe: each line of data is its own `data:` line.
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// The body of an event-stream response: chunks from a channel until it closes.
pub struct EventStream {
    rx: mpsc::Receiver<Bytes>,
    /// Keeps the connection counted as busy while the stream is open.
    pub(super) busy: Option<conns::Busy>,
}

impl hyper::body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_framed_one_data_line_per_line() {
        assert_eq!(
            sse_event(Some("delta"), "{\"text\":\"好\"}"),
            "event: delta\ndata: {\"text\":\"好\"}\n\n"
        );
        assert_eq!(sse_event(None, "a\nb"), "data: a\ndata: b\n\n");
    }
}
