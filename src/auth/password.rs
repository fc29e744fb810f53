//! Password hashing (bcrypt, off the async threads) and generation.
//! Plain passwords live only in `SecretString`s and are never logged.

use rand::RngExt as _;
use secrecy::{ExposeSecret, SecretString};

/// Letters and digits without look-alikes (0/O, 1/l/I).
const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const GENERATED_LEN: usize = 20;

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

pub async fn hash(password: &SecretString, cost: u32) -> Result<String, HashError> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || bcrypt::hash(password.expose_secret(), cost))
        .await
        .map_err(|e| HashError(e.to_string()))?
        .map_err(|e| HashError(e.to_string()))
}

/// True when `password` matches `hash`.
pub async fn verify(password: &SecretString, hash: &str) -> bool {
    let password = password.clone();
    let hash = hash.to_owned();
    tokio::task::spawn_blocking(move || bcrypt::verify(password.expose_secret(), &hash).unwrap_or(false))
        .await
        .unwrap_or(false)
}

/// A random 20-character password (about 116 bits).
pub fn generate() -> SecretString {
    let mut rng = rand::rng();
    let password: String =
        (0..GENERATED_LEN).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
    SecretString::from(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_the_right_password() {
        let password = SecretString::from("correct horse battery");
        let hashed = hash(&password, 4).await.unwrap();
        assert!(verify(&password, &hashed).await);
        assert!(!verify(&SecretString::from("wrong"), &hashed).await);
        assert!(!verify(&password, "not a bcrypt hash").await);
    }

    #[test]
    fn generated_passwords_are_long_and_differ() {
        let a = generate();
        let b = generate();
        assert_eq!(a.expose_secret().len(), GENERATED_LEN);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
