//! Who sent a delivery: signature schemes, each an HMAC-SHA256 compared in
//! constant time (`hmac`'s `verify_slice`), against every configured secret
//! so that a secret can be rotated without refusing deliveries.
//!
//! - `standard` ([Standard Webhooks](https://www.standardwebhooks.com)):
//!   `webhook-signature: v1,<base64>` (several, space-separated) over
//!   `<webhook-id>.<webhook-timestamp>.<body>`, keyed by the secret's bytes
//!   (`whsec_` + base64). The timestamp must be within the tolerance of now,
//!   so a captured delivery cannot be replayed later.
//! - `github`: `X-Hub-Signature-256: sha256=<hex>` over the body; the id is
//!   `X-GitHub-Delivery`, the event `X-GitHub-Event`. GitHub signs no
//!   timestamp, so there is no replay window to check: a replayed delivery
//!   carries its old id and is dropped downstream.
//! - `stripe`: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>]` over
//!   `<t>.<body>`; the id and event are the body's `id` and `type`.
//! - `none`: nothing is checked; the id comes from a header.

use base64::Engine;
use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The values of `verify:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
    /// GitHub (`X-Hub-Signature-256`).
    Github,
    /// Stripe (`Stripe-Signature`).
    Stripe,
    /// No signature; the id from `id_header`.
    None,
}

/// The HMAC key of a configured secret.
pub fn key_of(scheme: Scheme, secret: &str) -> Result<Vec<u8>, String> {
    match scheme {
        Scheme::Standard => {
            let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    "is not a Standard Webhooks secret: `whsec_` followed by base64".to_string()
                })
        }
        _ if secret.is_empty() => Err("is empty".into()),
        _ => Ok(secret.as_bytes().to_vec()),
    }
}

/// What a verified delivery says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The sender's id of the delivery; a retry carries the same one.
    pub id: String,
    /// The event's type, when the scheme says it.
    pub event_type: Option<String>,
}

/// Why a delivery is refused: 401 (not signed by us, or stale) or 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unauthorized(String),
    BadRequest(String),
}

pub struct Verifier {
    scheme: Scheme,
    keys: Vec<Vec<u8>>,
    tolerance_s: i64,
    id_header: String,
}

impl Verifier {
    /// Secrets are checked by the config check ([`key_of`]); a bad one is
    /// an error here too.
    pub fn new(
        scheme: Scheme,
        secrets: &[&str],
        tolerance_s: u64,
        id_header: Option<&str>,
    ) -> Result<Self, String> {
        Ok(Self {
            scheme,
            keys: secrets
                .iter()
                .map(|s| key_of(scheme, s))
                .collect::<Result<_, _>>()?,
            tolerance_s: tolerance_s as i64,
            id_header: id_header.unwrap_or("webhook-id").to_ascii_lowercase(),
        })
    }

    /// Check a delivery: `header` looks a header up (any case), `now_s` is
    /// the time in seconds since the epoch.
    pub fn verify<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
        body: &[u8],
        now_s: i64,
    ) -> Result<Delivery, Refusal> {
        let missing = |h: &str| Refusal::Unauthorized(format!("no `{h}` header"));
        match self.scheme {
            Scheme::Standard => {
                let id = header("webhook-id").ok_or_else(|| missing("webhook-id"))?;
                let ts = header("webhook-timestamp").ok_or_else(|| missing("webhook-timestamp"))?;
                let sigs =
                    header("webhook-signature").ok_or_else(|| missing("webhook-signature"))?;
                self.fresh(ts, now_s)?;
                let signed = [id.as_bytes(), b".", ts.as_bytes(), b".", body];
                let ok = sigs.split_ascii_whitespace().any(|s| {
                    s.strip_prefix("v1,")
                        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                        .is_some_and(|sig| self.matches(&signed, &sig))
                });
                self.signed(ok)?;
                Ok(Delivery {
                    id: id.to_string(),
                    event_type: id_and_type(body).1,
                })
            }
            Scheme::Github => {
                let sig =
                    header("x-hub-signature-256").ok_or_else(|| missing("X-Hub-Signature-256"))?;
                let ok = sig
                    .strip_prefix("sha256=")
                    .and_then(|h| hex::decode(h).ok())
                    .is_some_and(|sig| self.matches(&[body], &sig));
                self.signed(ok)?;
                let id = header("x-github-delivery")
                    .ok_or_else(|| Refusal::BadRequest("no `X-GitHub-Delivery` header".into()))?;
                Ok(Delivery {
                    id: id.to_string(),
                    event_type: header("x-github-event").map(str::to_string),
                })
            }
            Scheme::Stripe => {
                let sig = header("stripe-signature").ok_or_else(|| missing("Stripe-Signature"))?;
                let mut ts = None;
                let mut sigs = Vec::new();
                for part in sig.split(',') {
                    match part.trim().split_once('=') {
                        Some(("t", v)) => ts = Some(v),
                        Some(("v1", v)) => sigs.extend(hex::decode(v).ok()),
                        _ => {}
                    }
                }
                let ts = ts.ok_or_else(|| {
                    Refusal::Unauthorized("`Stripe-Signature` has no `t=`".into())
                })?;
                self.fresh(ts, now_s)?;
                let signed = [ts.as_bytes(), b".", body];
                self.signed(sigs.iter().any(|s| self.matches(&signed, s)))?;
                let (id, event_type) = id_and_type(body);
                let id = id.ok_or_else(|| {
                    Refusal::BadRequest("the body has no string `id` (a Stripe event id)".into())
                })?;
                Ok(Delivery { id, event_type })
            }
            Scheme::None => {
                let id = header(&self.id_header).ok_or_else(|| {
                    Refusal::BadRequest(format!(
                        "no `{}` header: every delivery needs an id (`id_header`)",
                        self.id_header
                    ))
                })?;
                Ok(Delivery {
                    id: id.to_string(),
                    event_type: id_and_type(body).1,
                })
            }
        }
    }

    /// Whether any key's HMAC of the concatenated `parts` is `sig`, each
    /// compared in constant time.
    fn matches(&self, parts: &[&[u8]], sig: &[u8]) -> bool {
        self.keys.iter().any(|k| {
            let mut mac = HmacSha256::new_from_slice(k).expect("HMAC takes keys of any length");
            for p in parts {
                mac.update(p);
            }
            mac.verify_slice(sig).is_ok()
        })
    }

    fn signed(&self, ok: bool) -> Result<(), Refusal> {
        if ok {
            Ok(())
        } else {
            Err(Refusal::Unauthorized(
                "the signature matches none of the secrets".into(),
            ))
        }
    }

    fn fresh(&self, ts: &str, now_s: i64) -> Result<(), Refusal> {
        let t: i64 = ts
            .trim()
            .parse()
            .map_err(|_| Refusal::Unauthorized(format!("timestamp `{ts}` is not a number")))?;
        if (now_s - t).abs() > self.tolerance_s {
            return Err(Refusal::Unauthorized(format!(
                "timestamp {t} is {}s away from now, more than the tolerance of {}s (a replay?)",
                (now_s - t).abs(),
                self.tolerance_s
            )));
        }
        Ok(())
    }
}

/// The string fields `id` and `type` at the top of a JSON object body,
/// read in one pass.
fn id_and_type(body: &[u8]) -> (Option<String>, Option<String>) {
    #[derive(Deserialize)]
    struct Top<'a> {
        #[serde(borrow)]
        id: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow, rename = "type")]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    match serde_json::from_slice::<Top>(body) {
        Ok(top) => (
            top.id.map(|s| s.into_owned()),
            top.kind.map(|s| s.into_owned()),
        ),
        Err(_) => (None, None),
    }
}

/// Sign like a sender does (for tests and benches): the header values.
pub mod sign {
    use super::*;

    /// `webhook-signature` for a Standard Webhooks delivery.
    pub fn standard(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
        let key = key_of(Scheme::Standard, secret).expect("a whsec_ secret");
        let mut mac = HmacSha256::new_from_slice(&key).expect("any length");
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    /// `X-Hub-Signature-256` for a GitHub delivery.
    pub fn github(secret: &str, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any length");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// `Stripe-Signature` for a Stripe delivery.
    pub fn stripe(secret: &str, ts: i64, body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("any length");
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        format!("t={ts},v1={}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OLD: &str = "whsec_b2xkIHNlY3JldCBvbGQgc2VjcmV0";

    fn check(
        v: &Verifier,
        headers: &[(&str, String)],
        body: &[u8],
        now: i64,
    ) -> Result<Delivery, Refusal> {
        let map: HashMap<String, String> = headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        v.verify(
            |h| map.get(&h.to_ascii_lowercase()).map(String::as_str),
            body,
            now,
        )
    }

    #[test]
    fn standard_webhooks_the_specs_example_and_rotation_and_replays() {
        // The example of the Standard Webhooks specification.
        let body = br#"{"test": 2432232314}"#;
        let sig = sign::standard(SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let v = Verifier::new(Scheme::Standard, &[OLD, SECRET], 300, None).unwrap();
        let headers = |ts: i64, sig: String| {
            vec![
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek".to_string()),
                ("webhook-timestamp", ts.to_string()),
                ("Webhook-Signature", sig),
            ]
        };
        let d = check(
            &v,
            &headers(1614265330, format!("v1,bm9wZQ== {sig}")),
            body,
            1614265400,
        )
        .unwrap();
        assert_eq!(d.id, "msg_p5jXN8AQM9LWM0D4loKWxJek");
        // Stale: the same signed delivery ten minutes later.
        assert!(matches!(
            check(&v, &headers(1614265330, sig.clone()), body, 1614265930),
            Err(Refusal::Unauthorized(m)) if m.contains("tolerance")
        ));
        // A body changed in one byte.
        assert!(check(
            &v,
            &headers(1614265330, sig.clone()),
            br#"{"test": 2432232315}"#,
            1614265330
        )
        .is_err());
        // Signed by a secret we do not have.
        let other = sign::standard(
            "whsec_c29tZW9uZSBlbHNl",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            body,
        );
        assert!(check(&v, &headers(1614265330, other), body, 1614265330).is_err());
        // Unsigned.
        assert!(check(
            &v,
            &headers(1614265330, String::new())[..2],
            body,
            1614265330
        )
        .is_err());
        // The old secret still verifies during a rotation.
        let by_old = sign::standard(OLD, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert!(check(&v, &headers(1614265330, by_old), body, 1614265330).is_ok());
    }

    #[test]
    fn github_and_stripe_presets() {
        let body = br#"{"id":"evt_1","type":"invoice.paid"}"#;
        let gh = Verifier::new(Scheme::Github, &["It's a Secret to Everybody"], 300, None).unwrap();
        // GitHub's documented example: "Hello, World!" with that secret.
        assert_eq!(
            sign::github("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let ok = check(
            &gh,
            &[
                (
                    "X-Hub-Signature-256",
                    sign::github("It's a Secret to Everybody", body),
                ),
                ("X-GitHub-Delivery", "d-1".into()),
                ("X-GitHub-Event", "push".into()),
            ],
            body,
            0,
        )
        .unwrap();
        assert_eq!(
            (ok.id.as_str(), ok.event_type.as_deref()),
            ("d-1", Some("push"))
        );
        assert!(check(&gh, &[("X-Hub-Signature-256", "sha256=00".into())], body, 0).is_err());

        let st = Verifier::new(Scheme::Stripe, &["whsec_stripe"], 300, None).unwrap();
        let ok = check(
            &st,
            &[("Stripe-Signature", sign::stripe("whsec_stripe", 1000, body))],
            body,
            1100,
        )
        .unwrap();
        assert_eq!(
            (ok.id.as_str(), ok.event_type.as_deref()),
            ("evt_1", Some("invoice.paid"))
        );
        assert!(check(
            &st,
            &[("Stripe-Signature", sign::stripe("whsec_stripe", 1000, body))],
            body,
            2000
        )
        .is_err());
    }

    #[test]
    fn none_needs_an_id() {
        let v = Verifier::new(Scheme::None, &[], 300, Some("X-Request-Id")).unwrap();
        assert_eq!(
            check(&v, &[("x-request-id", "r1".into())], b"{}", 0)
                .unwrap()
                .id,
            "r1"
        );
        assert!(matches!(
            check(&v, &[], b"{}", 0),
            Err(Refusal::BadRequest(_))
        ));
    }
}
