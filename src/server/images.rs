//! Images customers send with a message: the one intake every route uses (the JSON API's
//! `images`, the widget's upload, WeChat's image messages, webhook channels), so each image
//! is checked by its bytes, stripped of its metadata, stored and described the same way.
//!
//! Groundwork stand-in: part P (photos) replaces this file with the real intake over
//! `crate::media` and the vision client; the signatures below are the contract the other
//! parts code against.

use serde::Deserialize;

use super::errors::ApiError;
use super::state::State;
use crate::dialogue::ImageRef;

/// An image in a request body: its bytes inline (base64, no `data:` prefix needed), or the
/// id an upload (`POST /v1/images`) returned.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ImageInput {
    /// `{"data": "<base64>"}`.
    Data {
        /// The image's bytes, base64.
        data: String,
    },
    /// `{"id": "img_…"}`: an image uploaded for the same conversation.
    Id {
        /// The upload's id.
        id: String,
    },
}

impl State {
    /// Checks, strips, stores (and, with a vision model, describes) the images of one
    /// message of conversation `session`: the refs a [`crate::TurnRequest`] carries, or a
    /// 4xx JSON error for the first bad one (nothing of the message is kept then).
    pub async fn intake_images(&self, session: &str, images: Vec<ImageInput>) -> Result<Vec<ImageRef>, ApiError> {
        let _ = session;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        Err(ApiError::new(
            hyper::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image",
            "images are not taken yet",
        ))
    }

    /// The same for one image's raw bytes (an upload, a WeChat image fetched from its
    /// media API).
    pub async fn intake_bytes(&self, session: &str, bytes: Vec<u8>) -> Result<ImageRef, ApiError> {
        let _ = (session, bytes);
        Err(ApiError::new(
            hyper::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image",
            "images are not taken yet",
        ))
    }
}
