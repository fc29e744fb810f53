//! The session cookie opener, which every request with a cookie reaches before any check.
//! First byte even: the rest is the cookie value as a client sends it. Odd: the rest is
//! sealed first, so the fuzzer reaches the JWT checks behind the AES-GCM envelope.
//! Invariant: no panic, and nothing opens without a signature made by our key.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use promptops::auth::keys::Keyring;
use promptops::auth::session::CookieSeal;

static SEAL: LazyLock<CookieSeal> = LazyLock::new(|| {
    let keyring = Keyring::parse("fuzz:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("a valid key spec");
    CookieSeal::new(Arc::new(keyring))
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let cookie = String::from_utf8_lossy(rest);
        assert!(SEAL.open(&cookie).is_none(), "a cookie we did not make opened: {cookie:?}");
    } else {
        // A token sealed by us but not signed by us: the JWT checks must refuse it (a
        // genuine HS256 signature over fuzzed claims is out of the fuzzer's reach).
        let cookie = SEAL.seal_token(rest);
        assert!(SEAL.open(&cookie).is_none(), "an unsigned token opened: {:?}", String::from_utf8_lossy(rest));
    }
});
