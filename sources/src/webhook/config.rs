//! The `webhook` source's section of the pipeline file.

use super::verify::Scheme;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use syncline_core::config::{Issue, Secret};

/// An HTTP listener that publishes each delivery it is sent, answering 2xx
/// only once the broker has the record.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Address to listen on, `host:port`. Default `127.0.0.1:8090`
    /// (loopback: put a TLS-terminating proxy in front, or listen on
    /// `0.0.0.0:8090` deliberately).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The path deliveries are POSTed to; other paths answer 404.
    #[serde(default = "default_path")]
    pub path: String,
    /// The topic every delivery is published to (key: the delivery id).
    pub topic: String,
    /// How deliveries are signed: `standard` (Standard Webhooks:
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature`), `github`
    /// (`X-Hub-Signature-256`, id from `X-GitHub-Delivery`), `stripe`
    /// (`Stripe-Signature`, id from the body's `id`), or `none` (no
    /// signature; the id from `id_header`). A delivery that fails the check
    /// is answered 401 and not published.
    pub verify: Scheme,
    /// The signing secrets, any of which may have signed a delivery (two
    /// during a rotation). Standard Webhooks secrets are `whsec_` followed by
    /// base64; GitHub and Stripe secrets are used as written. Write them as
    /// `${VAR}`; they are never logged.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Seconds a signed timestamp may be away from now (`standard` and
    /// `stripe`): an older delivery is refused as a replay. Default 300.
    #[serde(default = "default_tolerance")]
    pub tolerance_s: u64,
    /// The header that holds the delivery id with `verify: none`. Default
    /// `webhook-id`. A delivery without it is answered 400.
    #[serde(default)]
    pub id_header: Option<String>,
    /// Largest body accepted, in bytes; a larger one is answered 413.
    /// Default 1,000,000 minus room for the record's other fields, so every
    /// accepted delivery fits the broker's default limit.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Deliveries being published at once; one more is answered 429 with
    /// `Retry-After`, so a burst waits at the sender, not in memory here.
    /// Default 1024.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Milliseconds a delivery waits for the broker's acknowledgement before
    /// it is answered 503 with `Retry-After` (the broker is away). The record
    /// may still land later: the sender's retry then carries the same id and
    /// is dropped downstream. Default 10,000.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// Where a delivery goes whose record the broker cannot take (larger
    /// than the producer's `message.max.bytes`). Default
    /// `<pipeline>.<source>.dead`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8090".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_tolerance() -> u64 {
    300
}
fn default_max_body() -> usize {
    900_000
}
fn default_max_in_flight() -> usize {
    1024
}
fn default_ack_timeout() -> u64 {
    10_000
}

impl WebhookConfig {
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        self.listen.parse().map_err(|_| {
            format!(
                "`{}` is not a `host:port` address, e.g. `127.0.0.1:8090`",
                self.listen
            )
        })
    }

    pub fn check(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        if let Err(e) = self.listen_addr() {
            issues.push(Issue::new("listen", e));
        }
        if !self.path.starts_with('/') {
            issues.push(Issue::new(
                "path",
                "must start with `/`, e.g. `/hooks/orders`",
            ));
        }
        issues.extend(crate::topic_name_issue("topic", &self.topic));
        match (self.verify, self.secrets.is_empty()) {
            (Scheme::None, false) => issues.push(Issue::new(
                "secrets",
                "`verify: none` checks no signature: remove `secrets`, or choose `standard`, `github` or `stripe`",
            )),
            (Scheme::None, true) => {}
            (_, true) => issues.push(Issue::new(
                "secrets",
                "a signed scheme needs at least one secret, e.g. `secrets: [\"${WEBHOOK_SECRET}\"]`",
            )),
            (scheme, false) => {
                for (i, s) in self.secrets.iter().enumerate() {
                    if let Err(e) = super::verify::key_of(scheme, &s.0) {
                        issues.push(Issue::new(format!("secrets[{i}]"), e));
                    }
                }
            }
        }
        if self.id_header.is_some() && self.verify != Scheme::None {
            issues.push(Issue::new(
                "id_header",
                "only `verify: none` reads the id from a header of your choice; the signed schemes have their own",
            ));
        }
        for (field, v) in [
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_in_flight", self.max_in_flight as u64),
            ("ack_timeout_ms", self.ack_timeout_ms),
        ] {
            if v == 0 {
                issues.push(Issue::new(field, "must be at least 1"));
            }
        }
        issues.extend(crate::dead_letter_topic_issue(
            self.dead_letter_topic.as_deref(),
        ));
        issues
    }
}

impl syncline_runtime::Component for WebhookConfig {
    fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    fn topics_out(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    fn check(&self) -> Vec<Issue> {
        WebhookConfig::check(self)
    }

    async fn run(
        &self,
        ctx: syncline_core::runtime::ComponentContext,
        shutdown: syncline_core::runtime::Shutdown,
    ) -> syncline_core::Result<()> {
        super::WebhookSource::build(self, ctx)
            .await?
            .run(shutdown)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> WebhookConfig {
        serde_json::from_str(json).unwrap()
    }

    fn paths(c: &WebhookConfig) -> Vec<String> {
        c.check().into_iter().map(|i| i.path).collect()
    }

    #[test]
    fn a_good_config_has_no_issues_and_defaults() {
        let c = parse(
            r#"{"topic":"hooks.orders","verify":"standard","secrets":["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}"#,
        );
        assert_eq!(c.check(), vec![]);
        assert_eq!(c.listen, "127.0.0.1:8090");
        assert_eq!(c.tolerance_s, 300);
        assert!(
            !format!("{c:?}").contains("MfKQ9r8"),
            "secrets are not shown"
        );
    }

    #[test]
    fn each_problem_is_named_by_its_field() {
        let c = parse(
            r#"{"listen":"localhost","path":"hooks","topic":"bad topic","verify":"standard","secrets":["whsec_!!"],
                "id_header":"x-id","max_in_flight":0}"#,
        );
        assert_eq!(
            paths(&c),
            vec![
                "listen",
                "path",
                "topic",
                "secrets[0]",
                "id_header",
                "max_in_flight"
            ]
        );
        let c = parse(r#"{"topic":"t","verify":"github"}"#);
        assert_eq!(paths(&c), vec!["secrets"]);
        let c = parse(r#"{"topic":"t","verify":"none","secrets":["x"]}"#);
        assert_eq!(paths(&c), vec!["secrets"]);
        assert!(serde_json::from_str::<WebhookConfig>(r#"{"topic":"t","verify":"hmac"}"#).is_err());
    }
}
