//! The signatures and the encryption of WeChat's message callbacks, as Tencent's
//! `WXBizMsgCrypt` samples define them (the same scheme for Official Accounts and WeCom).
//!
//! - `signature` (plaintext mode): hex SHA-1 of the token, timestamp and nonce, sorted
//!   as strings and joined.
//! - `msg_signature` (encrypted mode): the same over token, timestamp, nonce and the
//!   base64 ciphertext.
//! - The ciphertext: AES-256-CBC, key = base64(EncodingAESKey + "="), IV = the key's
//!   first 16 bytes, PKCS#7 padding to 32-byte blocks (not AES's 16), of
//!   `16 random bytes ‖ u32 BE length ‖ message ‖ receiveid`, then base64. The receiveid
//!   (the AppID, or the WeCom CorpID) is checked on the way in: a message for another
//!   account is refused.
//!
//! Signatures are compared in constant time.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The block size of WeChat's PKCS#7 padding (32 bytes, twice AES's block).
const PAD_BLOCK: usize = 32;

/// Base64 that accepts the trailing bits Tencent's 43-character keys leave non-zero
/// (`...ABCDEFG=` decodes with two stray bits; their libraries ignore them).
const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Why a callback's ciphertext was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The EncodingAESKey is not 43 characters of base64 making 32 bytes.
    #[error("the EncodingAESKey must be 43 characters of base64 (32 bytes)")]
    Key,
    /// The ciphertext is not base64, or not whole blocks.
    #[error("the ciphertext is not base64 of whole AES blocks")]
    Encoding,
    /// The padding or the length inside is wrong (another key, or tampered).
    #[error("the message does not decrypt (wrong key, or tampered)")]
    Decrypt,
    /// It decrypts, for another account.
    #[error("the message is for another account")]
    ReceiveId,
}

/// The hex SHA-1 of `parts` sorted and joined: `signature` over (token, timestamp,
/// nonce), `msg_signature` over (token, timestamp, nonce, encrypt).
pub fn sign(parts: &[&str]) -> String {
    let mut sorted: Vec<&str> = parts.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for part in sorted {
        hasher.update(part.as_bytes());
    }
    hex(&hasher.finalize())
}

/// Whether `given` (a hex signature from the query string) is the signature of `parts`,
/// compared in constant time (case-insensitively: hex is hex).
pub fn verify(given: &str, parts: &[&str]) -> bool {
    let expected = sign(parts);
    let given = given.to_ascii_lowercase();
    constant_time_eq(expected.as_bytes(), given.as_bytes())
}

/// Equality that takes the same time wherever the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The AES side of one account: its key and its receiveid.
#[derive(Clone)]
pub struct Cipher {
    key: [u8; 32],
    receive_id: String,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cipher")
            .field("key", &"***")
            .field("receive_id", &self.receive_id)
            .finish()
    }
}

impl Cipher {
    /// The cipher of an account: its EncodingAESKey (43 characters) and its AppID or
    /// CorpID.
    pub fn new(encoding_aes_key: &str, receive_id: &str) -> Result<Cipher, CryptoError> {
        if encoding_aes_key.len() != 43 {
            return Err(CryptoError::Key);
        }
        let bytes = LENIENT
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| CryptoError::Key)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::Key)?;
        Ok(Cipher {
            key,
            receive_id: receive_id.to_string(),
        })
    }

    /// Encrypts `message` with fresh random bytes in front (the OS's).
    pub fn encrypt(&self, message: &[u8]) -> String {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).expect("the OS's random numbers are there");
        self.encrypt_with(random, message)
    }

    /// Encrypts `message` with the given 16 leading bytes (Tencent's test vectors fix
    /// them).
    pub fn encrypt_with(&self, random: [u8; 16], message: &[u8]) -> String {
        let mut plain = Vec::with_capacity(20 + message.len() + self.receive_id.len() + PAD_BLOCK);
        plain.extend_from_slice(&random);
        plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
        plain.extend_from_slice(message);
        plain.extend_from_slice(self.receive_id.as_bytes());
        let pad = PAD_BLOCK - plain.len() % PAD_BLOCK;
        plain.extend(std::iter::repeat_n(pad as u8, pad));
        let len = plain.len();
        let encryptor = cbc::Encryptor::<aes::Aes256>::new(&self.key.into(), self.key[..16].into());
        let sealed = encryptor
            .encrypt_padded_mut::<NoPadding>(&mut plain, len)
            .expect("the plaintext is padded to whole blocks");
        base64::engine::general_purpose::STANDARD.encode(sealed)
    }

    /// Decrypts a callback's `Encrypt` (or `echostr`): the message, once the receiveid
    /// after it is this account's.
    pub fn decrypt(&self, encrypted: &str) -> Result<Vec<u8>, CryptoError> {
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(encrypted.trim())
            .map_err(|_| CryptoError::Encoding)?;
        if bytes.is_empty() || bytes.len() % 16 != 0 {
            return Err(CryptoError::Encoding);
        }
        let decryptor = cbc::Decryptor::<aes::Aes256>::new(&self.key.into(), self.key[..16].into());
        let plain = decryptor
            .decrypt_padded_mut::<NoPadding>(&mut bytes)
            .map_err(|_| CryptoError::Encoding)?;
        let pad = usize::from(*plain.last().ok_or(CryptoError::Decrypt)?);
        if pad == 0 || pad > PAD_BLOCK || pad > plain.len() {
            return Err(CryptoError::Decrypt);
        }
        let content = &plain[..plain.len() - pad];
        if content.len() < 20 {
            return Err(CryptoError::Decrypt);
        }
        let len = u32::from_be_bytes(content[16..20].try_into().expect("four bytes")) as usize;
        let rest = &content[20..];
        if len > rest.len() {
            return Err(CryptoError::Decrypt);
        }
        let (message, receive_id) = rest.split_at(len);
        if !constant_time_eq(receive_id, self.receive_id.as_bytes()) {
            return Err(CryptoError::ReceiveId);
        }
        Ok(message.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Tencent's WeCom sample (the `WXBizMsgCrypt` samples for C#, PHP, Python: token
    // `QDG6eK`, CorpID `wx5823bf96d3bd56c7`, EncodingAESKey `jWmY...B2C`), as found in
    // public copies of the sample (e.g. the C# `Sample.cs` of Tencent's MsgCryptTest and
    // the PHP sample's `VerifyURL` values).
    const WECOM_TOKEN: &str = "QDG6eK";
    const WECOM_CORP: &str = "wx5823bf96d3bd56c7";
    const WECOM_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

    #[test]
    fn wecom_url_verification_sample() {
        // VerifyURL: msg_signature, timestamp, nonce, echostr → the plaintext echo.
        let echostr = "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==";
        let parts = [WECOM_TOKEN, "1409659589", "263014780", echostr];
        assert!(verify("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3", &parts));
        assert!(!verify("5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd4", &parts));
        let cipher = Cipher::new(WECOM_KEY, WECOM_CORP).unwrap();
        assert_eq!(cipher.decrypt(echostr).unwrap(), b"1616140317555161061");
        // The same ciphertext for another CorpID is refused.
        let other = Cipher::new(WECOM_KEY, "wx0000000000000000").unwrap();
        assert_eq!(other.decrypt(echostr), Err(CryptoError::ReceiveId));
    }

    #[test]
    fn wecom_message_sample() {
        // DecryptMsg: the POST of the sample, its msg_signature over the Encrypt field.
        let encrypt = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";
        let parts = [WECOM_TOKEN, "1409659813", "1372623149", encrypt];
        assert!(verify("477715d11cdb4164915debcba66cb864d751f3e6", &parts));
        let cipher = Cipher::new(WECOM_KEY, WECOM_CORP).unwrap();
        let plain = String::from_utf8(cipher.decrypt(encrypt).unwrap()).unwrap();
        let fields = super::super::xml::parse(&plain).unwrap();
        assert_eq!(fields.get("ToUserName"), Some(WECOM_CORP));
        assert_eq!(fields.get("MsgType"), Some("text"));
        // Tampering with one character of the ciphertext breaks the signature.
        let tampered = encrypt.replacen('R', "S", 1);
        assert!(!verify(
            "477715d11cdb4164915debcba66cb864d751f3e6",
            &[WECOM_TOKEN, "1409659813", "1372623149", &tampered]
        ));
    }

    #[test]
    fn official_account_encrypt_sample() {
        // Tencent's Official Account sample (`WXBizMsgCryptTest.java`): EncodingAESKey
        // `abc...EFG`, AppID `wxb11529c136998cb6`, random `aaaabbbbccccdddd`, message
        // `我是中文abcd123` → the documented ciphertext.
        let cipher = Cipher::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wxb11529c136998cb6").unwrap();
        let sealed = cipher.encrypt_with(*b"aaaabbbbccccdddd", "我是中文abcd123".as_bytes());
        assert_eq!(
            sealed,
            "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
        );
        assert_eq!(cipher.decrypt(&sealed).unwrap(), "我是中文abcd123".as_bytes());
    }

    #[test]
    fn random_bytes_and_long_messages_round_trip() {
        let cipher = Cipher::new(WECOM_KEY, WECOM_CORP).unwrap();
        for len in [0, 1, 11, 12, 31, 32, 33, 500] {
            let message = "字".repeat(len);
            let sealed = cipher.encrypt(message.as_bytes());
            assert_ne!(
                sealed,
                cipher.encrypt(message.as_bytes()),
                "fresh random bytes each time"
            );
            assert_eq!(cipher.decrypt(&sealed).unwrap(), message.as_bytes());
        }
    }

    #[test]
    fn bad_keys_and_ciphertexts_are_errors_not_panics() {
        assert_eq!(Cipher::new("short", "x").unwrap_err(), CryptoError::Key);
        assert_eq!(Cipher::new(&"*".repeat(43), "x").unwrap_err(), CryptoError::Key);
        let cipher = Cipher::new(WECOM_KEY, WECOM_CORP).unwrap();
        assert_eq!(cipher.decrypt("not base64!"), Err(CryptoError::Encoding));
        assert_eq!(cipher.decrypt(""), Err(CryptoError::Encoding));
        assert_eq!(cipher.decrypt("AAAA"), Err(CryptoError::Encoding));
        let other = Cipher::new("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", WECOM_CORP).unwrap();
        let sealed = other.encrypt(b"hello");
        assert!(cipher.decrypt(&sealed).is_err(), "another key does not decrypt");
        for n in 1..64 {
            // Arbitrary blocks never panic.
            let junk = base64::engine::general_purpose::STANDARD.encode(vec![n as u8; 16 * (1 + n % 4)]);
            let _ = cipher.decrypt(&junk);
        }
    }

    #[test]
    fn plain_signature_sorts_its_parts() {
        assert_eq!(sign(&["b", "a", "c"]), sign(&["a", "b", "c"]));
        // SHA-1 of "abc".
        assert_eq!(sign(&["c", "a", "b"]), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert!(verify("A9993E364706816ABA3E25717850C26C9CD0D89D", &["abc"]));
        assert!(!verify("", &["abc"]));
    }
}
