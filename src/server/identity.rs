//! Who the customer is, as the shop's backend vouches for it: a signed identity.
//!
//! A browser can send any `user` and `context` it likes: a made-up VIP segment gets VIP
//! promotions, a made-up order goes through the exchange flow and raises a ticket. With an
//! identity key (`kefu serve --identity-key-file`), the customer's profile and the
//! request maps that carry facts (by default `order`) come only from a token the shop's
//! backend signs with that key: a JWT with HS256, `{"sub": user id, "exp": ..., "user":
//! {...}, "context": {"order": {...}}, "sid": session id (optional)}`. Every language the
//! shop's backend may be written in has a JWT library, and HS256 needs only the shared key.
//!
//! What a request may carry, with a key configured:
//! - from a caller with the admin bearer token (the shop's own backend calling kefu
//!   server to server): anything, as without a key;
//! - from anyone else: `user` and the signed context maps only inside a valid token
//!   (`X-Kefu-Identity` header, or `identity` / `kefu_identity` in the body); those
//!   fields sent in clear are refused (403 `identity_unsigned`), a token that does not
//!   verify is refused (401 `identity_invalid`), and without a token the customer is a
//!   guest (no profile), or refused when identities are required (401
//!   `identity_required`).
//!
//! A verified profile gets `id` (the token's `sub`) and `verified: true`, so rules can ask
//! for a signed-in customer before a flow that acts on an order (`user.verified == true`).
//! Only HS256 is accepted: a token naming another algorithm (`none`, an RSA one) is
//! refused, so the key's kind can never be confused.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::ApiError;
use crate::TurnRequest;
use hyper::StatusCode;

/// The header a token may come in.
pub const HEADER: &str = "x-kefu-identity";

/// How identities are checked (`kefu serve --identity-key-file`, `--identity-required`,
/// `--signed-context`).
#[derive(Clone)]
pub struct IdentityConfig {
    /// The HS256 key the shop's backend signs tokens with.
    pub key: Vec<u8>,
    /// Refuse customers without a token (a shop where every customer is signed in).
    pub required: bool,
    /// The context maps that only a token may set; `order` by default.
    pub signed_context: Vec<String>,
    /// Seconds of clock difference allowed when checking `exp` (and `nbf`).
    pub leeway_s: u64,
}

impl IdentityConfig {
    /// Checks with `key`: guests allowed, `order` signed, 60 s leeway.
    pub fn new(key: Vec<u8>) -> Self {
        IdentityConfig {
            key,
            required: false,
            signed_context: vec!["order".into()],
            leeway_s: 60,
        }
    }
}

impl std::fmt::Debug for IdentityConfig {
    /// Never shows the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("key", &"***")
            .field("required", &self.required)
            .field("signed_context", &self.signed_context)
            .field("leeway_s", &self.leeway_s)
            .finish()
    }
}

/// The claims kefu reads; others are ignored.
#[derive(Deserialize)]
struct Claims {
    /// The customer's id in the shop.
    sub: String,
    /// The customer's profile (`segment`, `vip`, `orders`, ...).
    #[serde(default)]
    user: Option<Map<String, Value>>,
    /// Request maps the backend vouches for (`order`, ...).
    #[serde(default)]
    context: Option<Map<String, Value>>,
    /// The one conversation the token is for, when the backend binds it.
    #[serde(default)]
    sid: Option<String>,
}

/// Verifies identity tokens with one key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    required: bool,
    signed_context: Vec<String>,
}

impl Verifier {
    /// A verifier for `config`; `None` for an empty key (a configuration mistake the caller
    /// reports).
    pub fn new(config: &IdentityConfig) -> Option<Self> {
        if config.key.is_empty() {
            return None;
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway_s;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Some(Verifier {
            key: DecodingKey::from_secret(&config.key),
            validation,
            required: config.required,
            signed_context: config.signed_context.clone(),
        })
    }

    /// Lays what `token` vouches for over `request`, and refuses what a customer may not
    /// set by themselves. `trusted`: the caller has the admin bearer token.
    pub fn apply(&self, token: Option<&str>, request: &mut TurnRequest, trusted: bool) -> Result<(), ApiError> {
        if !trusted {
            if request.user.is_some() {
                return Err(unsigned("`user`"));
            }
            if let Some(name) = request
                .context
                .as_ref()
                .and_then(|context| self.signed_context.iter().find(|name| context.contains_key(*name)))
            {
                return Err(unsigned(&format!("`context.{name}`")));
            }
        }
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return match self.required && !trusted {
                true => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "identity_required",
                    "this shop answers signed-in customers only: send the identity token your shop's backend signed, in `X-Kefu-Identity`",
                )),
                false => Ok(()),
            };
        };
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|error| invalid(&error))?
            .claims;
        if let Some(sid) = &claims.sid
            && *sid != request.session_id
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "identity_wrong_session",
                "the identity token was signed for another conversation (`sid`)",
            ));
        }
        let mut user = claims.user.unwrap_or_default();
        user.insert("id".into(), Value::String(claims.sub));
        user.insert("verified".into(), Value::Bool(true));
        request.user = Some(user);
        if let Some(signed) = claims.context {
            request.context.get_or_insert_with(Map::new).extend(signed);
        }
        Ok(())
    }
}

/// 403 `identity_unsigned`: a field only a token may carry, sent in clear.
fn unsigned(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "identity_unsigned",
        format!(
            "{what} comes only from the signed identity token (`X-Kefu-Identity`) when this shop has an identity key"
        ),
    )
}

/// 401 `identity_invalid`, saying why without echoing the token.
fn invalid(error: &jsonwebtoken::errors::Error) -> ApiError {
    use jsonwebtoken::errors::ErrorKind;
    let why = match error.kind() {
        ErrorKind::ExpiredSignature => "it has expired (`exp`)",
        ErrorKind::ImmatureSignature => "it is not valid yet (`nbf`)",
        ErrorKind::InvalidSignature => "its signature does not match this shop's key",
        ErrorKind::InvalidAlgorithm => "it is not signed with HS256",
        ErrorKind::MissingRequiredClaim(_) => "it lacks `sub` or `exp`",
        ErrorKind::Json(_) => "its claims are not the expected JSON (`sub` a string, `user` and `context` objects)",
        _ => "it is not a well-formed JWT",
    };
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "identity_invalid",
        format!("the identity token was refused: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const KEY: &[u8] = b"shop-backend-key";

    fn verifier() -> Verifier {
        Verifier::new(&IdentityConfig::new(KEY.to_vec())).unwrap()
    }

    fn sign(claims: Value, key: &[u8]) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key)).unwrap()
    }

    fn later() -> i64 {
        chrono::Utc::now().timestamp() + 600
    }

    fn request(body: Value) -> TurnRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_signed_profile_and_order_reach_the_turn() {
        let token = sign(
            json!({"sub": "u42", "exp": later(), "user": {"segment": "vip"},
                   "context": {"order": {"id": "202611020001", "signed_days": 3}}}),
            KEY,
        );
        let mut turn = request(json!({"session_id": "s", "message": "退货", "context": {"product": {"id": "p1"}}}));
        verifier().apply(Some(&token), &mut turn, false).unwrap();
        let user = turn.user.unwrap();
        assert_eq!(user["id"], "u42");
        assert_eq!(user["segment"], "vip");
        assert_eq!(user["verified"], true);
        let context = turn.context.unwrap();
        assert_eq!(context["order"]["id"], "202611020001");
        assert_eq!(context["product"]["id"], "p1", "unsigned maps stay");
    }

    #[test]
    fn forged_fields_are_refused() {
        let v = verifier();
        let mut turn = request(json!({"session_id": "s", "message": "m", "user": {"segment": "vip"}}));
        assert_eq!(v.apply(None, &mut turn, false).unwrap_err().kind, "identity_unsigned");
        let mut turn =
            request(json!({"session_id": "s", "message": "m", "context": {"order": {"id": "999999999999"}}}));
        let error = v.apply(None, &mut turn, false).unwrap_err();
        assert_eq!((error.status, error.kind), (StatusCode::FORBIDDEN, "identity_unsigned"));
        assert!(error.message.contains("context.order"), "{}", error.message);
        // The shop's backend, holding the admin token, may still pass them in clear.
        let mut turn = request(json!({"session_id": "s", "message": "m", "user": {"segment": "vip"}}));
        v.apply(None, &mut turn, true).unwrap();
        assert_eq!(turn.user.unwrap()["segment"], "vip");
    }

    #[test]
    fn tokens_that_do_not_verify_are_refused_with_the_reason() {
        let v = verifier();
        let cases = [
            (sign(json!({"sub": "u", "exp": later()}), b"another key"), "signature"),
            (sign(json!({"sub": "u", "exp": 1_000_000_000}), KEY), "expired"),
            (sign(json!({"sub": "u"}), KEY), "`sub` or `exp`"),
            (sign(json!({"sub": "u", "exp": later(), "user": "vip"}), KEY), "claims"),
            ("not.a.jwt".to_string(), "well-formed"),
            (
                encode(
                    &Header::new(Algorithm::HS384),
                    &json!({"sub": "u", "exp": later()}),
                    &EncodingKey::from_secret(KEY),
                )
                .unwrap(),
                "HS256",
            ),
        ];
        for (token, why) in cases {
            let mut turn = request(json!({"session_id": "s", "message": "m"}));
            let error = v.apply(Some(&token), &mut turn, false).unwrap_err();
            assert_eq!(
                (error.status, error.kind),
                (StatusCode::UNAUTHORIZED, "identity_invalid")
            );
            assert!(error.message.contains(why), "{why}: {}", error.message);
            assert!(!error.message.contains(&token), "the token is not echoed");
        }
        // `alg: none`, unsigned (`{"sub":"u","exp":4102444800}`, the year 2100), never passes.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo0MTAyNDQ0ODAwfQ.";
        let mut turn = request(json!({"session_id": "s", "message": "m"}));
        assert_eq!(
            v.apply(Some(none), &mut turn, false).unwrap_err().kind,
            "identity_invalid"
        );
    }

    #[test]
    fn guests_pass_unless_identities_are_required_and_sid_binds_a_token() {
        let mut turn = request(json!({"session_id": "s", "message": "m"}));
        verifier().apply(None, &mut turn, false).unwrap();
        assert!(turn.user.is_none(), "a guest has no profile");
        let mut config = IdentityConfig::new(KEY.to_vec());
        config.required = true;
        let strict = Verifier::new(&config).unwrap();
        let mut turn = request(json!({"session_id": "s", "message": "m"}));
        assert_eq!(
            strict.apply(None, &mut turn, false).unwrap_err().kind,
            "identity_required"
        );
        let token = sign(json!({"sub": "u", "exp": later(), "sid": "s1"}), KEY);
        let mut turn = request(json!({"session_id": "s2", "message": "m"}));
        assert_eq!(
            strict.apply(Some(&token), &mut turn, false).unwrap_err().kind,
            "identity_wrong_session"
        );
        let mut turn = request(json!({"session_id": "s1", "message": "m"}));
        strict.apply(Some(&token), &mut turn, false).unwrap();
        assert_eq!(turn.user.unwrap()["id"], "u");
    }
}
