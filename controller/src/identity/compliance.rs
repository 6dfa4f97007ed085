//! Keystone's `[security_compliance]` rules as pure functions: lockout, password
//! complexity, history, minimum age and expiry. Presets `default` (all off) and
//! `strict` (the provider policy: lock 300 s after 5 failures; lower + upper + digit;
//! length ≥ 20; none of the last 13; minimum age 1 day).

use std::sync::Arc;

use serde::Deserialize;

use crate::clock::{MICROS_PER_DAY, MICROS_PER_SEC};

/// The strict preset's complexity rule, in Keystone's (Python) regex syntax.
pub const STRICT_REGEX: &str = r"^(?=.*[a-z])(?=.*[A-Z])(?=.*[0-9]).{20,}$";
pub const STRICT_REGEX_DESCRIPTION: &str = "Passwords must be at least 20 characters long and contain at least one lowercase letter, one uppercase letter and one digit.";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Every rule off, as Keystone ships.
    #[default]
    Default,
    /// The provider policy.
    Strict,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Preset::Default),
            "strict" => Ok(Preset::Strict),
            other => Err(format!("unknown preset {other:?} (default or strict)")),
        }
    }
}

impl Preset {
    pub fn settings(self) -> SecurityCompliance {
        let off = SecurityCompliance {
            lockout_failure_attempts: 0,
            lockout_duration_secs: 0,
            unique_last_password_count: 0,
            minimum_password_age_days: 0,
            password_regex: None,
            password_regex_description: String::new(),
            password_expires_days: 0,
            change_password_upon_first_use: false,
        };
        match self {
            Preset::Default => off,
            Preset::Strict => {
                let strict = SecurityCompliance {
                    lockout_failure_attempts: 5,
                    lockout_duration_secs: 300,
                    unique_last_password_count: 13,
                    minimum_password_age_days: 1,
                    ..off
                };
                // The constant is known to compile (tested); fall back to "off" never happens.
                strict
                    .clone()
                    .with_regex(Some(STRICT_REGEX), STRICT_REGEX_DESCRIPTION)
                    .unwrap_or(strict)
            }
        }
    }
}

/// Why a new password is refused (each answers 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRuleError {
    #[error("Password validation error: The password does not meet the requirements: {0}")]
    Complexity(String),
    #[error("The new password cannot be identical to a previous password. The total number which includes the new password must be unique is {0}.")]
    InHistory(u32),
    #[error("You cannot change your password at this time due to the minimum password age. Once you change your password, it must be used for {days} day(s) before it can be changed. Please try again in {remaining} day(s) or contact your administrator to reset your password.")]
    TooYoung { days: u32, remaining: i64 },
}

/// The resolved rules the identity service enforces.
#[derive(Debug, Clone)]
pub struct SecurityCompliance {
    /// Failed attempts before the account locks; 0 = never.
    pub lockout_failure_attempts: u32,
    /// How long a lock lasts; 0 = until an admin re-enables... (Keystone: forever).
    pub lockout_duration_secs: u64,
    /// New password must differ from this many previous ones (incl. current); 0 = off.
    pub unique_last_password_count: u32,
    pub minimum_password_age_days: u32,
    pub password_regex: Option<Arc<fancy_regex::Regex>>,
    pub password_regex_description: String,
    /// 0 = passwords never expire.
    pub password_expires_days: u32,
    pub change_password_upon_first_use: bool,
}

impl SecurityCompliance {
    pub fn with_regex(mut self, re: Option<&str>, description: &str) -> Result<Self, String> {
        self.password_regex = match re {
            Some(re) => Some(Arc::new(
                fancy_regex::Regex::new(re).map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        self.password_regex_description = description.to_string();
        Ok(self)
    }

    /// The complexity rule (regex) for any new password.
    pub fn check_password(&self, password: &str) -> Result<(), PasswordRuleError> {
        if let Some(re) = &self.password_regex {
            // A regex that errors (backtrack limit) counts as not matching.
            if !re.is_match(password).unwrap_or(false) {
                return Err(PasswordRuleError::Complexity(
                    self.password_regex_description.clone(),
                ));
            }
        }
        Ok(())
    }

    /// How many past hashes (current included) a new password is compared to.
    pub fn history_len(&self) -> usize {
        self.unique_last_password_count as usize
    }

    /// The self-service minimum age rule; `set_at` is when the current password was set.
    pub fn check_minimum_age(&self, set_at: i64, now: i64) -> Result<(), PasswordRuleError> {
        if self.minimum_password_age_days == 0 {
            return Ok(());
        }
        let min = i64::from(self.minimum_password_age_days).saturating_mul(MICROS_PER_DAY);
        let age = now.saturating_sub(set_at);
        if age < min {
            let remaining =
                min.saturating_sub(age).saturating_add(MICROS_PER_DAY - 1) / MICROS_PER_DAY;
            return Err(PasswordRuleError::TooYoung {
                days: self.minimum_password_age_days,
                remaining,
            });
        }
        Ok(())
    }

    /// Whether an account with `failures` consecutive failures, the last at
    /// `last_failure`, is locked at `now`.
    pub fn is_locked(&self, failures: u32, last_failure: Option<i64>, now: i64) -> bool {
        if self.lockout_failure_attempts == 0 || failures < self.lockout_failure_attempts {
            return false;
        }
        if self.lockout_duration_secs == 0 {
            return true;
        }
        let until = last_failure.unwrap_or(0).saturating_add(
            i64::try_from(self.lockout_duration_secs)
                .unwrap_or(i64::MAX / MICROS_PER_SEC)
                .saturating_mul(MICROS_PER_SEC),
        );
        now < until
    }

    /// When a password set at `set_at` expires; `first_use` marks an admin-set password
    /// that must be changed on first use.
    pub fn password_expiry(&self, set_at: i64, first_use: bool) -> Option<i64> {
        if first_use && self.change_password_upon_first_use {
            return Some(set_at);
        }
        if self.password_expires_days == 0 {
            return None;
        }
        Some(
            set_at.saturating_add(
                i64::from(self.password_expires_days).saturating_mul(MICROS_PER_DAY),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000 * MICROS_PER_SEC;

    #[test]
    fn default_preset_is_all_off() {
        let d = Preset::Default.settings();
        assert!(d.check_password("a").is_ok());
        assert!(!d.is_locked(1000, Some(NOW), NOW));
        assert!(d.check_minimum_age(NOW, NOW).is_ok());
        assert_eq!(d.password_expiry(NOW, true), None);
        assert_eq!(d.history_len(), 0);
    }

    #[test]
    fn strict_complexity() {
        let s = Preset::Strict.settings();
        assert!(s.check_password("Abcdefghijklmnopqrs1").is_ok());
        // 19 chars.
        assert!(s.check_password("Abcdefghijklmnopqr1").is_err());
        assert!(s.check_password("abcdefghijklmnopqrs1").is_err());
        assert!(s.check_password("ABCDEFGHIJKLMNOPQRS1").is_err());
        let e = s.check_password("Abcdefghijklmnopqrst").unwrap_err();
        assert!(e.to_string().contains("at least 20 characters"), "{e}");
    }

    #[test]
    fn strict_lockout_after_five_for_300s() {
        let s = Preset::Strict.settings();
        assert!(!s.is_locked(4, Some(NOW), NOW));
        assert!(s.is_locked(5, Some(NOW), NOW));
        assert!(s.is_locked(5, Some(NOW), NOW + 299 * MICROS_PER_SEC));
        assert!(!s.is_locked(5, Some(NOW), NOW + 300 * MICROS_PER_SEC));
    }

    #[test]
    fn strict_minimum_age_one_day() {
        let s = Preset::Strict.settings();
        let e = s
            .check_minimum_age(NOW, NOW + 3600 * MICROS_PER_SEC)
            .unwrap_err();
        assert_eq!(
            e,
            PasswordRuleError::TooYoung {
                days: 1,
                remaining: 1
            }
        );
        assert!(e.to_string().contains("minimum password age"));
        assert!(s.check_minimum_age(NOW, NOW + MICROS_PER_DAY).is_ok());
        assert_eq!(s.history_len(), 13);
    }

    #[test]
    fn expiry_and_first_use() {
        let mut s = Preset::Default.settings();
        s.password_expires_days = 90;
        assert_eq!(
            s.password_expiry(NOW, false),
            Some(NOW + 90 * MICROS_PER_DAY)
        );
        s.change_password_upon_first_use = true;
        assert_eq!(s.password_expiry(NOW, true), Some(NOW));
        assert_eq!(
            s.password_expiry(NOW, false),
            Some(NOW + 90 * MICROS_PER_DAY)
        );
    }

    #[test]
    fn lockout_without_duration_is_permanent() {
        let mut s = Preset::Default.settings();
        s.lockout_failure_attempts = 2;
        assert!(s.is_locked(2, Some(NOW), NOW + 1000 * MICROS_PER_DAY));
    }

    #[test]
    fn presets_parse() {
        assert_eq!("strict".parse::<Preset>(), Ok(Preset::Strict));
        assert!("lax".parse::<Preset>().is_err());
    }
}
