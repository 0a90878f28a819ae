//! Injected faults: rules matched by path, fired with a seeded RNG so a test
//! that sends the same requests in the same order sees the same faults.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The fault rules in force: the first matching rule that fires decides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    #[serde(default)]
    pub rules: Vec<FaultRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Only requests whose path contains this (None: every request, the token endpoint too).
    #[serde(default)]
    pub path_contains: Option<String>,
    pub kind: FaultKind,
    /// Chance that a matching request gets the fault, 0..=1.
    pub probability: f64,
    /// How many more times it may fire (None: unlimited).
    #[serde(default)]
    pub remaining: Option<u32>,
}

impl FaultRule {
    /// Answers `status` (with `Retry-After` when given) to requests whose path
    /// contains `path`, with the chance `probability`, at most `remaining` times.
    pub fn status(
        path: impl Into<String>,
        status: u16,
        retry_after_secs: Option<u32>,
        probability: f64,
        remaining: Option<u32>,
    ) -> Self {
        Self {
            path_contains: Some(path.into()),
            kind: FaultKind::Status {
                status,
                retry_after_secs,
            },
            probability,
            remaining,
        }
    }
}

/// In JSON: `{"type":"status","status":503,"retry_after_secs":1}`,
/// `{"type":"timeout","secs":2.5}`, `{"type":"truncate"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status (500, 503, or 429 with a `Retry-After`). A 429
    /// or 503 with `retry_after_secs` also closes the request's throttling scope
    /// until then, like a real throttle.
    Status {
        status: u16,
        #[serde(default)]
        retry_after_secs: Option<u32>,
    },
    /// Hold the request this long (real time), then answer 504. A client that
    /// gives up sooner never sees an answer. A held Outlook request keeps its
    /// mailbox concurrency slot.
    Timeout { secs: f64 },
    /// Declare the full `Content-Length` but send only the first half of the
    /// body, then break the connection: the client sees an error, not a short success.
    Truncate,
}

impl FaultKind {
    /// The hold of a timeout, made safe for any number a test sends.
    pub(crate) fn hold(secs: f64) -> Duration {
        Duration::try_from_secs_f64(secs.clamp(0.0, 86_400.0)).unwrap_or_default()
    }
}

impl Faults {
    /// Why these rules cannot be used, if they cannot.
    pub fn validate(&self) -> Result<(), String> {
        for (i, rule) in self.rules.iter().enumerate() {
            if !(0.0..=1.0).contains(&rule.probability) {
                return Err(format!("rule {i}: probability must be within 0..=1"));
            }
            match rule.kind {
                FaultKind::Status { status, .. } if !(100..=599).contains(&status) => {
                    return Err(format!("rule {i}: {status} is not an HTTP status"));
                }
                FaultKind::Timeout { secs } if !secs.is_finite() || secs < 0.0 => {
                    return Err(format!("rule {i}: timeout secs must be a non-negative number"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The rules with their own RNG (independent of everything else the fake draws).
pub(crate) struct FaultPicker {
    faults: Faults,
    rng: StdRng,
}

impl FaultPicker {
    pub fn new(faults: Faults, seed: u64) -> Self {
        Self {
            faults,
            rng: StdRng::seed_from_u64(seed ^ 0xFA17_5EED),
        }
    }

    pub fn get(&self) -> &Faults {
        &self.faults
    }

    pub fn set(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// The fault this request gets, if any. Each matching rule draws on its own,
    /// so a rule's probability is the chance it fires when it is reached.
    pub fn pick(&mut self, path: &str) -> Option<FaultKind> {
        for rule in self.faults.rules.iter_mut() {
            let matches = rule.path_contains.as_deref().is_none_or(|p| path.contains(p));
            if !matches || rule.remaining == Some(0) {
                continue;
            }
            let fires = if rule.probability >= 1.0 {
                true
            } else if rule.probability > 0.0 {
                self.rng.r#gen::<f64>() < rule.probability
            } else {
                false
            };
            if fires {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                return Some(rule.kind.clone());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(path: Option<&str>, probability: f64, remaining: Option<u32>) -> FaultRule {
        FaultRule {
            path_contains: path.map(str::to_string),
            kind: FaultKind::Status {
                status: 500,
                retry_after_secs: None,
            },
            probability,
            remaining,
        }
    }

    #[test]
    fn rules_match_count_down_and_repeat_with_the_seed() {
        let faults = Faults {
            rules: vec![rule(Some("/users"), 1.0, Some(2)), rule(None, 0.3, None)],
        };
        let mut p = FaultPicker::new(faults.clone(), 7);
        assert!(p.pick("/v1.0/users").is_some());
        assert!(p.pick("/v1.0/users").is_some());
        assert_eq!(p.get().rules[0].remaining, Some(0));
        let a: Vec<bool> = (0..200).map(|_| p.pick("/v1.0/sites").is_some()).collect();
        let mut q = FaultPicker::new(faults, 7);
        q.pick("/v1.0/users");
        q.pick("/v1.0/users");
        let b: Vec<bool> = (0..200).map(|_| q.pick("/v1.0/sites").is_some()).collect();
        assert_eq!(a, b, "same seed, same faults");
        let fired = a.iter().filter(|f| **f).count();
        assert!((30..90).contains(&fired), "about 30% of 200: {fired}");
    }

    #[test]
    fn json_shapes_and_validation() {
        let f: Faults = serde_json::from_str(
            r#"{"rules":[{"path_contains":"/users","kind":{"type":"status","status":503},"probability":0.2},
                         {"kind":{"type":"timeout","secs":1.5},"probability":1},
                         {"kind":{"type":"truncate"},"probability":1,"remaining":1}]}"#,
        )
        .expect("parse");
        assert_eq!(f.rules.len(), 3);
        assert_eq!(f.rules[1].kind, FaultKind::Timeout { secs: 1.5 });
        assert!(f.validate().is_ok());
        let bad = Faults {
            rules: vec![rule(None, 1.5, None)],
        };
        assert!(bad.validate().is_err());
        assert_eq!(FaultKind::hold(f64::NAN), Duration::ZERO);
        assert_eq!(FaultKind::hold(-1.0), Duration::ZERO);
    }
}
