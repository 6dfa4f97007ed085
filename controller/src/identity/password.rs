//! Password hashing (argon2id), secrets and generated passwords.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

/// argon2id cost. Defaults are OWASP's recommendation (19 MiB, 2 passes, 1 lane);
/// tests lower them because debug builds of argon2 are slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashCost {
    fn default() -> Self {
        HashCost {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashCost {
    /// The cheapest parameters argon2 accepts; for tests only.
    pub const fn minimal() -> Self {
        HashCost {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.params().map(|_| ())
    }

    fn params(&self) -> Result<Params, String> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| e.to_string())
    }
}

/// Hashes `password` into a PHC string (`$argon2id$v=19$m=...`). Slow by design:
/// call it off the async executor.
pub fn hash(cost: &HashCost, password: &str) -> Result<String, String> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, cost.params()?);
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Checks `password` against a PHC string (the cost is read from the string).
pub fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// `n` random bytes, URL-safe base64 without padding, behind a fixed `k`.
///
/// The prefix matters: plain base64url starts with `-` one time in 32, and
/// then `openstack token revoke <token>` (any argparse CLI) reads the token as
/// an option and fails.
pub fn random_token(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "k{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A random id in Keystone's style: 32 lowercase hex digits.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A 32-character password with lower, upper and digits: satisfies the strict policy.
pub fn generate_password() -> String {
    const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const DIGIT: &[u8] = b"23456789";
    let mut rng = rand::rngs::OsRng;
    let mut pick = |set: &[u8]| set[rng.gen_range(0..set.len())] as char;
    let mut chars: Vec<char> = vec![pick(LOWER), pick(UPPER), pick(DIGIT)];
    let all: Vec<u8> = [LOWER, UPPER, DIGIT].concat();
    while chars.len() < 32 {
        chars.push(pick(&all));
    }
    // Shuffle so the three guaranteed classes are not always in front.
    for i in (1..chars.len()).rev() {
        let j = rand::rngs::OsRng.gen_range(0..=i);
        chars.swap(i, j);
    }
    chars.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash(&HashCost::minimal(), "s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(&h, "s3cret"));
        assert!(!verify(&h, "s3cret!"));
        assert!(!verify("garbage", "s3cret"));
    }

    #[test]
    fn salts_differ() {
        let a = hash(&HashCost::minimal(), "x").unwrap();
        let b = hash(&HashCost::minimal(), "x").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn bad_cost_is_refused() {
        let c = HashCost {
            memory_kib: 1,
            iterations: 0,
            parallelism: 0,
        };
        assert!(c.validate().is_err());
        assert!(HashCost::default().validate().is_ok());
    }

    #[test]
    fn tokens_never_look_like_command_line_options() {
        for _ in 0..2000 {
            let token = random_token(32);
            assert!(token.starts_with('k'), "{token}");
            assert_eq!(token.len(), 1 + 43);
        }
    }

    #[test]
    fn generated_passwords_pass_the_strict_policy() {
        let strict = crate::identity::compliance::Preset::Strict.settings();
        for _ in 0..50 {
            let pw = generate_password();
            assert!(strict.check_password(&pw).is_ok(), "{pw}");
        }
        assert_ne!(generate_password(), generate_password());
    }
}
