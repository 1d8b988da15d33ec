//! The registry of component types: the one place that lists them.
//!
//! A component type is a folder (under `sources/`, `processors/` or
//! `sinks/`) whose settings type implements [`syncline_runtime::Component`],
//! plus one line below: its `type:` word, the settings type, and a one-line
//! summary. From that line the macro makes everything else: the variant of
//! the role's enum (serde-tagged by `type`), the list of valid types that
//! the loader offers (with "did you mean"), the loader's dispatch, the
//! reference section (docs/reference.md, from the type's doc comments), the
//! topic graph `validate` checks, and the supervisor's call to run it.

use super::load::Loader;
use super::position::Path;
use schemars::JsonSchema;
use serde::Serialize;
use serde_yaml::Value;
use syncline_core::config::Issue;
use syncline_core::runtime::{ComponentContext, Shutdown};
use syncline_core::Result;
use syncline_processors::{DedupProcessorConfig, RulesProcessorConfig};
use syncline_runtime::Component;
use syncline_sinks::http::HttpSinkConfig;
use syncline_sinks::mysql::MysqlSinkConfig;
use syncline_sinks::postgres::PostgresSinkConfig;
use syncline_sinks::sqlite::SqliteSinkConfig;
use syncline_sources::http_poll::HttpPollConfig;
use syncline_sources::mysql_cdc::MysqlCdcConfig;
use syncline_sources::postgres_cdc::PostgresCdcConfig;
use syncline_sources::sql_poll::SqlPollConfig;
use syncline_sources::webhook::WebhookConfig;

/// A section of the generated reference: anchor, title, JSON schema.
pub type ReferenceEntry = (String, String, schemars::Schema);

/// A role's enum (sources, processors, sinks), as the loader sees it.
pub(super) trait Role: Sized {
    /// Every `type:` word of the role, in registration order.
    const TYPES: &'static [&'static str];
    /// Read the settings of a component of type `ty` (one of `TYPES`);
    /// mistakes are reported to `l` by path.
    fn load(l: &mut Loader, path: &Path, ty: &str, body: Value) -> Option<Self>;
    fn issues(&self) -> Vec<Issue>;
}

macro_rules! registry {
    ($(
        $(#[$meta:meta])*
        $role:literal $enum:ident {
            $( $variant:ident($ty:ty) = $name:literal, $doc:literal; )+
        }
    )+) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize, JsonSchema)]
        #[serde(tag = "type")]
        pub enum $enum {
            $( #[doc = $doc] #[serde(rename = $name)] $variant($ty), )+
        }

        impl $enum {
            pub fn type_name(&self) -> &'static str {
                match self { $( Self::$variant(_) => $name, )+ }
            }

            // (sources read no topic and sinks write none: unused for them)
            #[allow(dead_code)]
            pub fn topics_in(&self) -> Vec<String> {
                match self { $( Self::$variant(c) => c.topics_in(), )+ }
            }

            #[allow(dead_code)]
            pub fn topics_out(&self) -> Vec<String> {
                match self { $( Self::$variant(c) => c.topics_out(), )+ }
            }

            pub fn check(&self) -> Vec<Issue> {
                match self { $( Self::$variant(c) => c.check(), )+ }
            }

            /// Where the component's dead letters go: the topic the file
            /// names, or `<pipeline>.<name>.dead`.
            pub fn dead_letter_topic(&self, pipeline: &str, name: &str) -> String {
                let named = match self { $( Self::$variant(c) => c.dead_letter_topic(), )+ };
                named.map_or_else(|| format!("{pipeline}.{name}.dead"), str::to_string)
            }

            /// Build and run the component until `shutdown` or an error.
            pub async fn run(&self, ctx: ComponentContext, shutdown: Shutdown) -> Result<()> {
                match self { $( Self::$variant(c) => c.run(ctx, shutdown).await, )+ }
            }

            /// The reference sections of this role's types.
            pub fn reference() -> Vec<ReferenceEntry> {
                vec![$( (
                    format!("{}-{}", $role, $name),
                    format!("{}{} `type: {}`", $role[..1].to_uppercase(), &$role[1..], $name),
                    schemars::schema_for!($ty),
                ), )+]
            }
        }

        impl Role for $enum {
            const TYPES: &'static [&'static str] = &[$($name),+];

            fn load(l: &mut Loader, path: &Path, ty: &str, body: Value) -> Option<Self> {
                match ty {
                    $( $name => l.de(path, body).map(Self::$variant), )+
                    _ => None,
                }
            }

            fn issues(&self) -> Vec<Issue> {
                self.check()
            }
        }
    )+};
}

registry! {
    /// A source: `type` picks the kind.
    "source" SourceConfig {
        SqlPoll(SqlPollConfig) = "sql_poll",
            "Polls tables or queries (Postgres, SQLite) on a schedule.";
        PostgresCdc(PostgresCdcConfig) = "postgres_cdc",
            "Captures inserts, updates and deletes of Postgres tables through logical replication, after a snapshot consistent with the slot.";
        MysqlCdc(MysqlCdcConfig) = "mysql_cdc",
            "Captures inserts, updates and deletes of MariaDB and MySQL tables from the binlog, after a snapshot consistent with a binlog position.";
        HttpPoll(HttpPollConfig) = "http_poll",
            "Polls an HTTP API on a schedule (pagination, incremental cursor, auth, rate limits), storing its cursor and page only after the broker has the records.";
        Webhook(WebhookConfig) = "webhook",
            "Listens for HTTP deliveries (Standard Webhooks, GitHub, Stripe signatures) and publishes each, answering 2xx only once the broker has it.";
    }

    /// A processor: `type` picks the kind.
    "processor" ProcessorConfig {
        Rules(RulesProcessorConfig) = "rules",
            "Transforms each change with declarative steps (filter, set, rename, drop, cast, mask, route, unwrap), at least once with stable identity.";
        Dedup(DedupProcessorConfig) = "dedup",
            "Drops changes already seen (by identity, content or fields, forever or within a TTL), with RocksDB state backed by a changelog topic.";
    }

    /// A sink: `type` picks the kind.
    "sink" SinkConfig {
        Postgres(PostgresSinkConfig) = "postgres",
            "Applies changes to Postgres tables, exactly once.";
        Mysql(MysqlSinkConfig) = "mysql",
            "Applies changes to MySQL 8 or MariaDB tables, exactly once.";
        Sqlite(SqliteSinkConfig) = "sqlite",
            "Applies changes to tables of a SQLite file (WAL mode), exactly once.";
        Http(HttpSinkConfig) = "http",
            "Delivers changes to an HTTP endpoint as JSON batches, at least once, with stable ids and idempotency keys for the receiver to drop repeats.";
    }
}
