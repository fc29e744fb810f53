//! The encryption keyring: named 256-bit master keys (the first one active), and the
//! per-purpose AES-256-GCM sealing built on them. Key bytes never leave this module.

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hkdf::Hkdf;
use sha2::Sha256;

/// What a derived key is for; each purpose gets its own key from every master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Personal access tokens at rest.
    Vault,
    /// The session cookie's sealed envelope.
    SessionCookie,
    /// HMAC signing of the session JWT.
    SessionJwt,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Self::Vault => b"promptops:vault:v1",
            Self::SessionCookie => b"promptops:session-cookie:v1",
            Self::SessionJwt => b"promptops:session-jwt:v1",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("PROMPTOPS_ENCRYPTION_KEYS: {0}")]
    Invalid(String),
    #[error("key file {path}: {reason}")]
    File { path: String, reason: String },
}

/// A sealed value and the key that sealed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// Why a sealed value did not open: unknown key, or tampered/misplaced ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("sealed with key {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("the sealed value does not authenticate (tampered, or bound to another owner)")]
    Corrupt,
}

struct MasterKey {
    id: String,
    bytes: [u8; 32],
}

/// Master keys in order of preference: the first seals, all open.
pub struct Keyring {
    keys: Vec<MasterKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish_non_exhaustive()
    }
}

impl Keyring {
    /// Parses `id:base64key[,id:base64key…]`; each key is 32 random bytes in standard base64.
    pub fn parse(spec: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<MasterKey> = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, encoded) =
                entry.split_once(':').ok_or_else(|| KeyError::Invalid("each entry is id:base64key".into()))?;
            let id = id.trim();
            if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(KeyError::Invalid(format!("key id {id:?} must be 1-32 letters, digits, '-' or '_'")));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyError::Invalid(format!("key id {id:?} appears twice")));
            }
            let bytes = BASE64
                .decode(encoded.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| KeyError::Invalid(format!("key {id:?} is not 32 bytes of base64")))?;
            keys.push(MasterKey { id: id.to_owned(), bytes });
        }
        if keys.is_empty() {
            return Err(KeyError::Invalid("no key given".into()));
        }
        Ok(Self { keys })
    }

    /// A new random key spec line, `id:base64key`.
    pub fn generate_spec(id: &str) -> String {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        format!("{id}:{}", BASE64.encode(bytes))
    }

    /// Reads the key file, creating it with a fresh key when it does not exist.
    /// Returns the keyring and whether a key was generated.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyError> {
        let file_error = |reason: String| KeyError::File { path: path.display().to_string(), reason };
        match std::fs::read_to_string(path) {
            Ok(spec) => Ok((Self::parse(&spec).map_err(|e| file_error(e.to_string()))?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| file_error(e.to_string()))?;
                }
                let spec = Self::generate_spec(&format!("local-{}", chrono::Utc::now().format("%Y%m%d")));
                write_private(path, &spec).map_err(|e| file_error(e.to_string()))?;
                Ok((Self::parse(&spec).map_err(|e| file_error(e.to_string()))?, true))
            }
            Err(e) => Err(file_error(e.to_string())),
        }
    }

    pub fn active_id(&self) -> &str {
        &self.keys[0].id
    }

    /// The derived key of `purpose` under master key `key_id`.
    pub fn derived(&self, key_id: &str, purpose: Purpose) -> Option<[u8; 32]> {
        let master = self.keys.iter().find(|k| k.id == key_id)?;
        let mut out = [0u8; 32];
        // HKDF-SHA256 can always produce 32 bytes; the error case is for > 255 * 32.
        Hkdf::<Sha256>::new(None, &master.bytes).expand(purpose.info(), &mut out).ok()?;
        Some(out)
    }

    /// Seals `plaintext` under the active key, binding `aad` (who and what it belongs to).
    pub fn seal(&self, purpose: Purpose, aad: &[u8], plaintext: &[u8]) -> Sealed {
        let key_id = self.active_id().to_owned();
        let cipher = self.cipher(&key_id, purpose).expect("the active key is always in the ring");
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let ciphertext = cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: plaintext, aad })
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        Sealed { key_id, nonce: nonce.to_vec(), ciphertext }
    }

    pub fn open(&self, purpose: Purpose, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, OpenError> {
        let cipher =
            self.cipher(&sealed.key_id, purpose).ok_or_else(|| OpenError::UnknownKey(sealed.key_id.clone()))?;
        let nonce = <[u8; 12]>::try_from(sealed.nonce.as_slice()).map_err(|_| OpenError::Corrupt)?;
        cipher.decrypt(&Nonce::from(nonce), Payload { msg: &sealed.ciphertext, aad }).map_err(|_| OpenError::Corrupt)
    }

    fn cipher(&self, key_id: &str, purpose: Purpose) -> Option<Aes256Gcm> {
        let key = self.derived(key_id, purpose)?;
        Some(Aes256Gcm::new(&Key::<Aes256Gcm>::from(key)))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(not(unix))]
fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{content}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_with_the_same_binding_only() {
        let ring = Keyring::parse(&Keyring::generate_spec("k1")).unwrap();
        let sealed = ring.seal(Purpose::Vault, b"user:1:jira", b"secret-pat");
        assert_eq!(sealed.key_id, "k1");
        assert_eq!(ring.open(Purpose::Vault, b"user:1:jira", &sealed).unwrap(), b"secret-pat");
        assert_eq!(ring.open(Purpose::Vault, b"user:2:jira", &sealed), Err(OpenError::Corrupt));
        assert_eq!(ring.open(Purpose::SessionCookie, b"user:1:jira", &sealed), Err(OpenError::Corrupt));
    }

    #[test]
    fn older_keys_still_open_and_unknown_ones_are_named() {
        let old = Keyring::generate_spec("old");
        let sealed = Keyring::parse(&old).unwrap().seal(Purpose::Vault, b"a", b"x");
        let rotated = Keyring::parse(&format!("{},{old}", Keyring::generate_spec("new"))).unwrap();
        assert_eq!(rotated.active_id(), "new");
        assert_eq!(rotated.open(Purpose::Vault, b"a", &sealed).unwrap(), b"x");
        let without = Keyring::parse(&Keyring::generate_spec("new")).unwrap();
        assert_eq!(without.open(Purpose::Vault, b"a", &sealed), Err(OpenError::UnknownKey("old".into())));
    }

    #[test]
    fn rejects_bad_specs_without_echoing_key_material() {
        for spec in ["", "k1", "k1:short", "bad id:AAAA", &format!("a:{0},a:{0}", BASE64.encode([0u8; 32]))] {
            let error = Keyring::parse(spec).unwrap_err().to_string();
            assert!(!error.contains("AAAAAAAA"), "{error}");
        }
        assert!(format!("{:?}", Keyring::parse(&Keyring::generate_spec("k9")).unwrap()).contains("k9"));
    }
}
