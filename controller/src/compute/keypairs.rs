//! Keypairs: import a public key or generate an ed25519 pair (the private key is
//! returned once and never stored), per user, counted against `key_pairs`.

use md5::{Digest, Md5};
use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};

use super::model::Keypair;
use super::tables::{KEYPAIRS, META};
use super::{Compute, Who};
use crate::clock::now_micros;
use crate::error::{ApiError, ApiResult};

/// A freshly created keypair and, when generated, its private key (OpenSSH format).
pub struct Created {
    pub keypair: Keypair,
    pub private_key: Option<String>,
}

pub fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("Keypair {name} not found."))
}

/// Nova's fingerprint: MD5 of the key blob, as colon-separated hex.
pub fn fingerprint(key: &PublicKey) -> ApiResult<String> {
    let blob = key
        .to_bytes()
        .map_err(|e| ApiError::BadRequest(format!("Keypair data is invalid: {e}")))?;
    let digest = Md5::digest(&blob);
    Ok(digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_ .@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "Keypair data is invalid: Keypair name contains unsafe characters".into(),
        ))
    }
}

impl Compute {
    pub fn create_keypair(
        &self,
        who: &Who,
        name: &str,
        public_key: Option<&str>,
        limit: i64,
    ) -> ApiResult<Created> {
        check_name(name)?;
        let (public, private_key) = match public_key {
            Some(text) => {
                let key = PublicKey::from_openssh(text.trim()).map_err(|_| {
                    ApiError::BadRequest(
                        "Keypair data is invalid: failed to generate fingerprint".into(),
                    )
                })?;
                (key, None)
            }
            None => {
                let private = PrivateKey::random(&mut rand::rngs::OsRng, Algorithm::Ed25519)
                    .map_err(|e| ApiError::Internal(format!("key generation: {e}")))?;
                let pem = private
                    .to_openssh(LineEnding::LF)
                    .map_err(|e| ApiError::Internal(format!("key encoding: {e}")))?;
                (private.public_key().clone(), Some(pem.to_string()))
            }
        };
        let public_text = public
            .to_openssh()
            .map_err(|e| ApiError::BadRequest(format!("Keypair data is invalid: {e}")))?;
        let fp = fingerprint(&public)?;
        let mut w = self.store.write()?;
        let key = Keypair::key(&who.user_id, name);
        if KEYPAIRS.contains(w.as_read(), &key)? {
            return Err(ApiError::Conflict(format!(
                "Key pair '{name}' already exists."
            )));
        }
        let count = KEYPAIRS
            .scan(w.as_read(), &format!("{}|", who.user_id))?
            .len() as i64;
        if limit >= 0 && count >= limit {
            return Err(ApiError::Forbidden(
                "Quota exceeded, too many key pairs.".into(),
            ));
        }
        let next: u64 = META
            .get(w.as_read(), "next_keypair_id")?
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        META.put(&mut *w, "next_keypair_id", &(next + 1).to_string())?;
        let kp = Keypair {
            id: next,
            name: name.to_string(),
            user_id: who.user_id.clone(),
            key_type: "ssh".into(),
            public_key: public_text,
            fingerprint: fp,
            created_at: now_micros(),
        };
        KEYPAIRS.put(&mut *w, &key, &kp)?;
        w.commit()?;
        Ok(Created {
            keypair: kp,
            private_key,
        })
    }

    /// The keypairs of `user` (an admin may name another user; others only themselves).
    pub fn keypairs(&self, who: &Who, user: Option<&str>) -> ApiResult<Vec<Keypair>> {
        let user = self.keypair_owner(who, user)?;
        let r = self.store.read()?;
        Ok(KEYPAIRS.values_prefix(&*r, &format!("{user}|"))?)
    }

    pub fn keypair(&self, who: &Who, name: &str, user: Option<&str>) -> ApiResult<Keypair> {
        let user = self.keypair_owner(who, user)?;
        let r = self.store.read()?;
        KEYPAIRS
            .get(&*r, &Keypair::key(&user, name))?
            .ok_or_else(|| not_found(name))
    }

    pub fn delete_keypair(&self, who: &Who, name: &str, user: Option<&str>) -> ApiResult<()> {
        let user = self.keypair_owner(who, user)?;
        let mut w = self.store.write()?;
        if !KEYPAIRS.delete(&mut *w, &Keypair::key(&user, name))? {
            return Err(not_found(name));
        }
        w.commit()?;
        Ok(())
    }

    fn keypair_owner(&self, who: &Who, user: Option<&str>) -> ApiResult<String> {
        match user {
            Some(u) if u != who.user_id && !who.admin => Err(ApiError::Forbidden(
                "Policy doesn't allow os_compute_api:os-keypairs:index to be performed.".into(),
            )),
            Some(u) => Ok(u.to_string()),
            None => Ok(who.user_id.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_md5_of_the_blob() {
        // The OpenSSH test vector: `ssh-keygen -l -E md5` of this key.
        let k = PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti user@example.com",
        )
        .unwrap();
        let fp = fingerprint(&k).unwrap();
        assert_eq!(fp.len(), 47);
        assert_eq!(fp.matches(':').count(), 15);
        assert!(check_name("my key_1.x@y").is_ok());
        assert!(check_name("bad/name").is_err());
        assert!(check_name(" ").is_err());
    }
}
