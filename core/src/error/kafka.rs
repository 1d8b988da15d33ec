//! Kafka errors (librdkafka's codes, local and broker) by what every stage
//! does next, in one table.
//!
//! - `Transient`: the broker or the network is away, a leader is moving, a
//!   group is rebalancing, a producer was fenced (it is created anew): retry.
//! - `Data`: this record cannot be written as it is (larger than the broker
//!   accepts, refused as invalid): it goes to the dead-letter topic, with the
//!   reason, and the rest goes on.
//! - `Config`: the operator must act (authorization, authentication, a topic
//!   setting the cluster refuses such as its replication factor, an
//!   unsupported feature): the component stops and says why.
//!
//! A code not in the table is retried: librdkafka reports its own transient
//! states under many codes, and every permanent code known to need an
//! operator is listed.

use super::{Error, ErrorKind};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode as C;
use ErrorKind::{Config, Data, Transient};

/// (code, kind, why).
#[rustfmt::skip]
pub const TABLE: &[(C, ErrorKind, &str)] = &[
    (C::MessageSizeTooLarge, Data, "the record is larger than the broker accepts (message.max.bytes / max.message.bytes)"),
    (C::InvalidMessageSize, Data, "the record's size is invalid"),
    (C::MessageBatchTooLarge, Data, "the record is larger than a batch may be"),
    (C::InvalidRecord, Data, "the broker refused the record as invalid"),
    (C::InvalidMessage, Data, "the record is corrupt"),
    (C::InvalidTimestamp, Data, "the record's timestamp is out of the topic's range"),
    (C::TopicAuthorizationFailed, Config, "not authorized for the topic: grant the principal access"),
    (C::GroupAuthorizationFailed, Config, "not authorized for the consumer group"),
    (C::ClusterAuthorizationFailed, Config, "not authorized for the cluster operation"),
    (C::TransactionalIdAuthorizationFailed, Config, "not authorized for the transactional id"),
    (C::SaslAuthenticationFailed, Config, "SASL authentication failed: check the credentials"),
    (C::Authentication, Config, "authentication failed: check the credentials"),
    (C::UnsupportedSASLMechanism, Config, "the broker does not support this SASL mechanism"),
    (C::SSL, Config, "TLS failed: check certificates and security.protocol"),
    (C::InvalidReplicationFactor, Config, "the replication factor is larger than the cluster allows"),
    (C::InvalidPartitions, Config, "invalid partition count"),
    (C::InvalidConfig, Config, "the cluster refused a topic setting"),
    (C::InvalidTopic, Config, "invalid topic name"),
    (C::PolicyViolation, Config, "a cluster policy refused the request"),
    (C::TopicDeletionDisabled, Config, "topic deletion is disabled"),
    (C::UnsupportedVersion, Config, "the broker does not support this request (too old, or not Kafka)"),
    (C::UnsupportedFeature, Config, "the broker does not support a feature syncline needs"),
    (C::UnsupportedCompressionType, Config, "the broker does not support the compression type"),
    (C::InvalidRequiredAcks, Config, "invalid acks setting"),
    (C::InvalidArgument, Config, "an invalid client setting"),
    (C::InvalidGroupId, Config, "invalid consumer group id"),
    (C::InvalidSessionTimeout, Config, "session.timeout.ms is outside the broker's group.min/max.session.timeout.ms"),
    (C::InvalidTransactionTimeout, Config, "transaction.timeout.ms is larger than the broker's transaction.max.timeout.ms"),
    (C::BrokerTransportFailure, Transient, "the connection to a broker failed"),
    (C::AllBrokersDown, Transient, "no broker is reachable"),
    (C::Resolve, Transient, "a broker's host name does not resolve (yet)"),
    (C::MessageTimedOut, Transient, "the record was not acknowledged in time"),
    (C::RequestTimedOut, Transient, "a request timed out"),
    (C::OperationTimedOut, Transient, "an operation timed out"),
    (C::QueueFull, Transient, "the producer's queue is full"),
    (C::NotLeaderForPartition, Transient, "the partition's leader moved"),
    (C::LeaderNotAvailable, Transient, "the partition has no leader at the moment"),
    (C::NotEnoughReplicas, Transient, "fewer in-sync replicas than min.insync.replicas"),
    (C::NotEnoughReplicasAfterAppend, Transient, "fewer in-sync replicas than min.insync.replicas"),
    (C::NetworkException, Transient, "a network error"),
    (C::UnknownTopicOrPartition, Transient, "the topic is not known to the broker (yet)"),
    (C::CoordinatorLoadInProgress, Transient, "the coordinator is loading"),
    (C::CoordinatorNotAvailable, Transient, "no coordinator at the moment"),
    (C::NotCoordinator, Transient, "the coordinator moved"),
    (C::RebalanceInProgress, Transient, "the consumer group is rebalancing"),
    (C::IllegalGeneration, Transient, "the group moved on (a rebalance)"),
    (C::UnknownMemberId, Transient, "the group no longer knows this member"),
    (C::KafkaStorageError, Transient, "a broker's disk failed; another replica takes over"),
    (C::ProducerFenced, Transient, "a newer producer with the same transactional id took over"),
    (C::InvalidProducerEpoch, Transient, "the producer was fenced"),
    (C::Fenced, Transient, "the producer was fenced"),
    (C::Fatal, Transient, "the client hit a fatal error and is created anew"),
    (C::ThrottlingQuotaExceeded, Transient, "a quota throttles the client"),
];

/// What `code` means, by [`TABLE`]: (kind, why).
pub fn classify_code(code: C) -> (ErrorKind, &'static str) {
    TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, kind, why)| (*kind, *why))
        .unwrap_or((Transient, "a Kafka error retried as passing"))
}

/// The kind of a client error (by its code; no code: transient).
pub fn kind(e: &KafkaError) -> ErrorKind {
    e.rdkafka_error_code()
        .map(|c| classify_code(c).0)
        .unwrap_or(Transient)
}

/// `e` as a syncline error whose kind says what to do next; `what` is the
/// message, the table's reason and `e` follow it.
pub fn kafka_error(e: KafkaError, what: impl Into<String>) -> Error {
    let (kind, why) = e
        .rdkafka_error_code()
        .map(classify_code)
        .unwrap_or((Transient, "a Kafka error retried as passing"));
    Error::new(kind, format!("{} ({why})", what.into())).with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_what_the_table_says_and_listed_once() {
        for (i, (code, kind, why)) in TABLE.iter().enumerate() {
            assert_eq!(classify_code(*code), (*kind, *why), "{code:?}");
            assert!(
                !TABLE[..i].iter().any(|(c, _, _)| c == code),
                "{code:?} is listed twice"
            );
        }
    }

    /// The codes the connector runtime issue names, one by one.
    #[test]
    fn permanent_errors_are_not_retried() {
        assert_eq!(classify_code(C::MessageSizeTooLarge).0, Data);
        assert_eq!(classify_code(C::TopicAuthorizationFailed).0, Config);
        assert_eq!(classify_code(C::InvalidReplicationFactor).0, Config);
        assert_eq!(classify_code(C::SaslAuthenticationFailed).0, Config);
    }

    #[test]
    fn passing_faults_are_retried() {
        for c in [
            C::BrokerTransportFailure,
            C::AllBrokersDown,
            C::NotLeaderForPartition,
            C::NotEnoughReplicas,
            C::MessageTimedOut,
            C::ProducerFenced,
            C::Fatal,
        ] {
            assert_eq!(classify_code(c).0, Transient, "{c:?}");
        }
        assert_eq!(classify_code(C::Outdated).0, Transient, "unlisted: retried");
    }

    #[test]
    fn an_error_keeps_its_message_reason_and_cause() {
        let e = kafka_error(
            KafkaError::MessageProduction(C::MessageSizeTooLarge),
            "cannot publish the record at t[0]@5",
        );
        assert_eq!(e.kind(), Data);
        let text = e.to_string();
        assert!(
            text.starts_with("cannot publish the record at t[0]@5 (the record is larger"),
            "{text}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }
}
