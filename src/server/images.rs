//! Images customers send with a message: the one intake every route uses (the JSON API's
//! `images`, the widget's upload, WeChat's image messages, webhook channels), so each image
//! is checked by its bytes, stripped of its metadata, stored and described the same way.
//!
//! - [`State::intake_images`] / [`State::intake_bytes`]: [`crate::media::clean`] on the
//!   blocking pool (at most [`Photos`]' decoding permits at once, so a burst of large
//!   photos cannot take all memory), then the [`ImageStore`], then, with a vision model
//!   (`--vision-url`), one description per image, masked by the serving rules' PII
//!   redaction. A message's images are all checked before any is stored: a bad one
//!   refuses the message whole and keeps nothing of it.
//! - `POST /v1/images` ([`upload`]): the raw bytes of one image (a widget's upload), for a
//!   later message's `images: [{"id": …}]`; 201 `{id, kind, width, height, bytes}`.
//! - `GET /admin/images/{id}` ([`show`]): the stored bytes for the inbox (permission
//!   `read`), with the stored type, `nosniff` and `Cache-Control: private`.
//!
//! Refusals are 4xx JSON: 415 `unsupported_image`, 422 `bad_image`, 413 `image_too_large`
//! (a body is never read past the limit), 422 `image_too_large_pixels`, 429
//! `too_many_images_today` (a conversation's daily bound), 400 `too_many_images` (more than
//! [`MAX_IMAGES_PER_MESSAGE`] in one message). No image bytes reach a log line.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::auth::Caller;
use super::errors::ApiError;
use super::http::{Body, decode_segment, json_response};
use super::limits::check_api_session_id;
use super::metrics::Metrics;
use super::state::State;
use crate::dialogue::ImageRef;
use crate::llm::vision::{Vision, VisionConfig};
use crate::media::{self, ImageLimits, ImageStore, Kind, MediaError, StoreConfig, is_image_id};
use crate::safety::logsafe::LogSafe;

/// The most images one message may carry.
pub const MAX_IMAGES_PER_MESSAGE: usize = 4;

/// How often images past their retention are removed.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// What `kefu serve` takes images with (`--image-*`, `--vision-*`).
#[derive(Clone, Debug)]
pub struct ImageConfig {
    /// Where images are stored; `None`: `STATE_DIR/images`.
    pub dir: Option<PathBuf>,
    /// How long an image is kept.
    pub retention: Duration,
    /// Images one conversation may send a day.
    pub per_day: u32,
    /// Bytes and pixels an image may have.
    pub limits: ImageLimits,
    /// The vision model, when there is one.
    pub vision: Option<VisionConfig>,
}

impl Default for ImageConfig {
    /// In the state directory, 30 days, 20 a conversation a day, [`ImageLimits::default`],
    /// no vision model.
    fn default() -> Self {
        ImageConfig {
            dir: None,
            retention: media::store::RETENTION,
            per_day: media::store::PER_DAY,
            limits: ImageLimits::default(),
            vision: None,
        }
    }
}

/// An image in a request body: its bytes inline (base64, no `data:` prefix needed), or the
/// id an upload (`POST /v1/images`) returned.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "RawImage")]
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

impl ImageInput {
    /// The bytes of its inline base64 (0 for an id).
    pub fn inline_len(&self) -> usize {
        match self {
            ImageInput::Data { data } => data.len(),
            ImageInput::Id { .. } => 0,
        }
    }
}

/// The JSON of an [`ImageInput`], read strictly so that a mistake has a clear message.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

impl TryFrom<RawImage> for ImageInput {
    type Error = String;

    fn try_from(raw: RawImage) -> Result<Self, String> {
        match (raw.data, raw.id) {
            (Some(data), None) => Ok(ImageInput::Data { data }),
            (None, Some(id)) => Ok(ImageInput::Id { id }),
            _ => Err("an image is `{\"data\": \"<base64>\"}` or `{\"id\": \"img_…\"}` (from POST /v1/images), one of the two".into()),
        }
    }
}

/// The service's images: the store, the limits, the vision model, the decoding permits.
pub struct Photos {
    store: ImageStore,
    limits: ImageLimits,
    vision: Option<Vision>,
    /// Images decoded at once (each may hold up to 40 megapixels while it is).
    decoding: Arc<Semaphore>,
    /// The vision model's last call failed: the next failures are counted, not logged,
    /// until one succeeds.
    vision_failing: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Photos {
    /// Opens the store of `config` (in `state_dir/images` unless it names a directory).
    pub fn open(config: &ImageConfig, state_dir: &std::path::Path, metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let dir = config.dir.clone().unwrap_or_else(|| state_dir.join("images"));
        let store = ImageStore::open(StoreConfig {
            dir,
            retention: config.retention,
            per_day: config.per_day,
        })?;
        let vision = match &config.vision {
            Some(vision) => Some(Vision::new(vision.clone()).map_err(|e| std::io::Error::other(e.to_string()))?),
            None => None,
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Photos {
            store,
            limits: config.limits.clone(),
            vision,
            decoding: Arc::new(Semaphore::new(cores.clamp(1, 4))),
            vision_failing: AtomicBool::new(false),
            metrics,
        })
    }

    /// The store (tests sweep it).
    pub fn store(&self) -> &ImageStore {
        &self.store
    }

    /// The most bytes of base64 an inline image may take.
    fn max_base64(&self) -> usize {
        self.limits.max_bytes.div_ceil(3) * 4
    }

    /// Checks every image of a message, then stores the new ones; the references in order.
    fn take(&self, session: &str, pending: Vec<Pending>, now: i64) -> Result<Vec<ImageRef>, MediaError> {
        enum Ready {
            New(media::Cleaned),
            Known(ImageRef),
        }
        let mut ready = Vec::with_capacity(pending.len());
        for item in pending {
            ready.push(match item {
                Pending::Bytes(bytes) => Ready::New(media::clean(&bytes, &self.limits)?),
                Pending::Stored(id) => match self.store.meta(&id)? {
                    Some(meta) if meta.session == session => Ready::Known(meta.to_ref(&id)),
                    _ => return Err(MediaError::Unknown(id)),
                },
            });
        }
        let mut refs = Vec::with_capacity(ready.len());
        let mut new = Vec::new();
        for item in ready {
            match item {
                Ready::Known(known) => refs.push(known),
                Ready::New(cleaned) => match self.store.put(session, &cleaned, now) {
                    Ok(stored) => {
                        new.push(stored.id.clone());
                        refs.push(stored);
                    }
                    Err(error) => {
                        // Nothing of a refused message is kept.
                        for id in &new {
                            self.store.remove(session, id);
                        }
                        return Err(error);
                    }
                },
            }
        }
        for _ in &new {
            self.metrics.image("stored");
        }
        Ok(refs)
    }

    /// Describes image `image` with the vision model, when there is one and it has no
    /// description yet; the description masked by `rules`' PII redaction and kept.
    fn describe(&self, image: &mut ImageRef, rules: &crate::RuleSet) {
        let Some(vision) = &self.vision else {
            return;
        };
        if image.description.is_some() {
            return;
        }
        let Ok(Some((_, bytes))) = self.store.read(&image.id) else {
            return;
        };
        let mime = Kind::from_name(&image.kind).map_or("image/jpeg", Kind::mime);
        match vision.describe(mime, &bytes) {
            Ok(text) => {
                self.metrics.vision("described");
                if self.vision_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(vision = %vision.shown(), "the vision model describes images again");
                }
                let masked = rules.safety.redact_pii(&text).into_owned();
                if let Err(error) = self.store.describe(&image.id, &masked) {
                    tracing::warn!(image = %image.id, %error, "an image's description could not be kept");
                }
                image.description = Some(masked);
            }
            Err(error) => {
                self.metrics.vision(error.outcome());
                if !self.vision_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        vision = %vision.shown(),
                        %error,
                        "the vision model gave no description; images go without until it answers (failures are counted in kefu_vision_total)"
                    );
                }
            }
        }
    }
}

/// An image of a message before it is checked.
enum Pending {
    Bytes(Vec<u8>),
    Stored(String),
}

/// Removes images past their retention every [`SWEEP_EVERY`] (the first sweep at once),
/// while the service runs; stopped when dropped.
pub struct Sweeper(tokio::task::JoinHandle<()>);

impl Sweeper {
    /// Starts sweeping `photos` on the current runtime.
    pub fn start(photos: &Arc<Photos>) -> Self {
        let photos = Arc::downgrade(photos);
        Sweeper(tokio::spawn(async move {
            loop {
                let Some(alive) = photos.upgrade() else { return };
                let swept = tokio::task::spawn_blocking(move || alive.store.sweep(std::time::SystemTime::now())).await;
                match swept {
                    Ok(Ok(0)) => {}
                    Ok(Ok(removed)) => tracing::info!(removed, "images past their retention removed"),
                    Ok(Err(error)) => tracing::warn!(%error, "the image store could not be swept"),
                    Err(error) => tracing::error!(%error, "the image sweep panicked"),
                }
                tokio::time::sleep(SWEEP_EVERY).await;
            }
        }))
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The API's error for a refused image.
fn api_error(error: MediaError) -> ApiError {
    let status = match &error {
        MediaError::Unsupported => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        MediaError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        MediaError::TooManyPixels { .. } | MediaError::Bad { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        MediaError::TooManyToday { .. } => StatusCode::TOO_MANY_REQUESTS,
        MediaError::Unknown(_) => StatusCode::NOT_FOUND,
        MediaError::Io(io) => {
            tracing::error!(error = %io, "the image store failed");
            return ApiError::internal();
        }
    };
    ApiError::new(status, error.code(), error.to_string())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl State {
    /// Checks, strips, stores (and, with a vision model, describes) the images of one
    /// message of conversation `session`: the refs a [`crate::TurnRequest`] carries, or a
    /// 4xx JSON error for the first bad one (nothing of the message is kept then).
    pub async fn intake_images(&self, session: &str, images: Vec<ImageInput>) -> Result<Vec<ImageRef>, ApiError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        if images.len() > MAX_IMAGES_PER_MESSAGE {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "too_many_images",
                format!(
                    "a message carries at most {MAX_IMAGES_PER_MESSAGE} images; it has {}",
                    images.len()
                ),
            ));
        }
        let mut pending = Vec::with_capacity(images.len());
        for image in images {
            pending.push(match image {
                ImageInput::Data { data } => Pending::Bytes(self.inline_bytes(&data)?),
                ImageInput::Id { id } if is_image_id(&id) => Pending::Stored(id),
                ImageInput::Id { .. } => {
                    return Err(ApiError::invalid(
                        "an image `id` is `img_` and 32 hex digits, as POST /v1/images answered it",
                    ));
                }
            });
        }
        self.intake(session, pending, true).await
    }

    /// The same for one image's raw bytes (an upload, a WeChat image fetched from its
    /// media API).
    pub async fn intake_bytes(&self, session: &str, bytes: Vec<u8>) -> Result<ImageRef, ApiError> {
        let mut refs = self.intake(session, vec![Pending::Bytes(bytes)], true).await?;
        refs.pop().ok_or_else(ApiError::internal)
    }

    /// The largest `/v1/chat` (and `/v1/chat/completions`) body: the limit of any body
    /// and one image's worth of inline base64 (more images in one message are uploaded
    /// first and named by id).
    pub(super) fn chat_body_limit(&self) -> usize {
        self.limits.max_body_bytes.saturating_add(self.photos.max_base64())
    }

    /// Parses a chat body read with [`State::chat_body_limit`]: one over the limit of any
    /// body that is not JSON is refused as too large, as it was before images had room.
    pub(super) fn parse_chat_body<T: serde::de::DeserializeOwned>(&self, raw: &[u8]) -> Result<T, ApiError> {
        super::http::parse_json(raw).map_err(|error| {
            if raw.len() > self.limits.max_body_bytes {
                super::http::too_large(self.limits.max_body_bytes)
            } else {
                error
            }
        })
    }

    /// Refuses a body whose size less its inline images' base64 (`inline` bytes) is over
    /// the limit of any body: the room made for images is for images.
    pub(super) fn check_body_besides_images(&self, body: usize, inline: usize) -> Result<(), ApiError> {
        if body.saturating_sub(inline) > self.limits.max_body_bytes {
            return Err(super::http::too_large(self.limits.max_body_bytes));
        }
        Ok(())
    }

    /// An inline image's bytes: base64 (standard or URL-safe, padded or not), with or
    /// without a `data:image/…;base64,` prefix.
    fn inline_bytes(&self, data: &str) -> Result<Vec<u8>, ApiError> {
        let data = match data.strip_prefix("data:") {
            Some(url) => match url.split_once(',') {
                Some((meta, payload)) if meta.ends_with(";base64") => payload,
                _ => {
                    return Err(ApiError::invalid(
                        "an image's `data:` URL must be base64 (`data:image/jpeg;base64,…`)",
                    ));
                }
            },
            None => data,
        };
        let data = data.trim();
        if data.len() > self.photos.max_base64() + 4 {
            self.metrics.image("image_too_large");
            return Err(api_error(MediaError::TooLarge {
                limit: self.photos.limits.max_bytes,
            }));
        }
        let compact: String;
        let data = if data.bytes().any(|b| b.is_ascii_whitespace()) {
            compact = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            compact.as_str()
        } else {
            data
        };
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        engines
            .iter()
            .find_map(|engine| engine.decode(data).ok())
            .ok_or_else(|| ApiError::invalid("an image's `data` is not base64"))
    }

    /// Checks and stores a message's images on the blocking pool, then describes them.
    async fn intake(&self, session: &str, pending: Vec<Pending>, describe: bool) -> Result<Vec<ImageRef>, ApiError> {
        let photos = Arc::clone(&self.photos);
        let permit = Arc::clone(&photos.decoding)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal())?;
        let owner = session.to_string();
        let taken = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            photos.take(&owner, pending, now_ms())
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "image intake panicked");
            ApiError::internal()
        })?;
        let refs = match taken {
            Ok(refs) => refs,
            Err(error) => {
                self.metrics.image(error.code());
                tracing::info!(session = %LogSafe(session), refused = error.code(), "an image was refused");
                return Err(api_error(error));
            }
        };
        if !describe || self.photos.vision.is_none() {
            return Ok(refs);
        }
        // One request per image, side by side: the wait is the slowest one's, within the
        // vision timeout.
        let rules = self.engine.rules();
        let mut described = Vec::with_capacity(refs.len());
        for mut image in refs {
            let (photos, rules) = (Arc::clone(&self.photos), Arc::clone(&rules));
            described.push(tokio::task::spawn_blocking(move || {
                photos.describe(&mut image, &rules);
                image
            }));
        }
        let mut out = Vec::with_capacity(described.len());
        for task in described {
            out.push(task.await.map_err(|_| ApiError::internal())?);
        }
        Ok(out)
    }
}

/// `POST /v1/images`: one image's raw bytes for conversation `X-Kefu-Session` (or
/// `?session_id=`). A conversation that exists needs its `session_token`
/// (`X-Kefu-Session-Token` or `?token=`) unless the caller may read the admin routes; a
/// new one is started by its first message, as on `/v1/chat`.
pub(super) async fn upload(
    state: &Arc<State>,
    req: Request<Incoming>,
    caller: Caller,
) -> Result<Response<Body>, ApiError> {
    let mut session = header(&req, "x-kefu-session");
    let mut token = header(&req, "x-kefu-session-token");
    for pair in req.uri().query().unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "session_id" => session = session.or(Some(decode_segment(value)?)),
            "token" => token = token.or(Some(decode_segment(value)?)),
            "site" => {}
            _ => {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{name}`; `session_id`, `token` and `site` are taken"
                )));
            }
        }
    }
    let session =
        session.ok_or_else(|| ApiError::invalid("name the conversation: header `X-Kefu-Session` or `?session_id=`"))?;
    check_api_session_id(&session, &state.limits)?;
    state.check_rate(&session)?;
    if !caller.admin {
        let key = session.clone();
        let stored = state
            .with_store(move |s| s.engine.session(&key))
            .await?
            .map_err(ApiError::from_engine)?;
        if let Some(stored) = stored
            && !stored.token.is_empty()
            && !token
                .as_deref()
                .is_some_and(|t| crate::engine::constant_time_eq(t.as_bytes(), stored.token.as_bytes()))
        {
            return Err(ApiError::from_engine(crate::engine::EngineError::WrongToken(session)));
        }
    }
    let bytes = read_image(req, state.photos.limits.max_bytes, &state.metrics).await?;
    let mut refs = state.intake(&session, vec![Pending::Bytes(bytes)], false).await?;
    let image = refs.pop().ok_or_else(ApiError::internal)?;
    Ok(json_response(
        StatusCode::CREATED,
        &serde_json::json!({
            "id": image.id,
            "kind": image.kind,
            "width": image.width,
            "height": image.height,
            "bytes": image.bytes,
        }),
    ))
}

fn header(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// An upload's body, refused as soon as it passes `limit` bytes (by its declared length
/// before a byte is read).
async fn read_image(req: Request<Incoming>, limit: usize, metrics: &Metrics) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        metrics.image("image_too_large");
        api_error(MediaError::TooLarge { limit })
    };
    Ok(super::http::read_body_or(req, limit, too_large).await?.to_vec())
}

/// `GET /admin/images/{id}`: a stored image for the inbox.
pub(super) async fn show(state: &Arc<State>, id: &str) -> Result<Response<Body>, ApiError> {
    if !is_image_id(id) {
        return Err(ApiError::not_found(format!("no image `{}`", LogSafe(id))));
    }
    let (photos, key) = (Arc::clone(&state.photos), id.to_string());
    let found = tokio::task::spawn_blocking(move || photos.store.read(&key))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|error| {
            tracing::error!(%error, "the image store could not be read");
            ApiError::internal()
        })?;
    let Some((meta, bytes)) = found else {
        return Err(ApiError::not_found(format!(
            "no image `{id}`: never stored, or removed after the retention time"
        )));
    };
    let kind = Kind::from_name(&meta.kind).unwrap_or(Kind::Jpeg);
    let mut response = Response::new(Body::Left(Full::new(Bytes::from(bytes))));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind.mime()));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_data_or_an_id_and_nothing_else() {
        let data: ImageInput = serde_json::from_str(r#"{"data": "aGk="}"#).unwrap();
        assert!(matches!(data, ImageInput::Data { data } if data == "aGk="));
        let id: ImageInput = serde_json::from_str(r#"{"id": "img_x"}"#).unwrap();
        assert!(matches!(id, ImageInput::Id { id } if id == "img_x"));
        for bad in [r#"{}"#, r#"{"data": "a", "id": "b"}"#, r#"{"url": "http://x/y.jpg"}"#] {
            assert!(serde_json::from_str::<ImageInput>(bad).is_err(), "{bad}");
        }
    }
}
