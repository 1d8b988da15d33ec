//! One error type for every stage. Its [`ErrorKind`] decides what happens next,
//! so callers never match on message text.

use std::fmt;

/// What the runtime should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A passing fault (network, broker or database briefly away): retry after a delay.
    Transient,
    /// The user's configuration or environment is wrong: stop and say how to fix it.
    Config,
    /// Data that this stage cannot handle (poison record, incompatible schema):
    /// stop this pipeline, or dead-letter the record where the stage supports it.
    Data,
    /// A bug or a broken invariant: stop.
    Internal,
}

#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    /// The whole pipeline must stop, not only the component that met it.
    pipeline_wide: bool,
    /// Retrying the failed call is useless: the component must be built
    /// again (new clients) and resume from its stored position.
    restart: bool,
    /// The least time to wait before retrying, as the other side asked
    /// (HTTP `Retry-After`).
    retry_after: Option<std::time::Duration>,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            pipeline_wide: false,
            restart: false,
            retry_after: None,
            message: message.into(),
            source: None,
        }
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
    /// Keep `source` as the cause of this error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// Mark an error that must stop the whole pipeline, not only the
    /// component that met it: a schema the registry refuses (the pipeline's
    /// data no longer fits what its consumers expect, so nothing of it may
    /// go on until an operator decides).
    pub fn stopping_pipeline(mut self) -> Self {
        self.pipeline_wide = true;
        self
    }
    /// Whether this error, or one it wraps, must stop the whole pipeline.
    pub fn stops_pipeline(&self) -> bool {
        self.any_in_chain(|e| e.pipeline_wide)
    }
    /// Mark a (transient) error after which the component must be built
    /// again rather than the call retried in place: e.g. a Kafka
    /// transaction that failed (the producer may be fenced or its state
    /// stuck, the consumer's group generation stale).
    pub fn restarting_component(mut self) -> Self {
        self.restart = true;
        self
    }
    /// Mark a (transient) error after which the retry must wait at least
    /// `wait`: the other side said when to come back (HTTP `Retry-After`).
    /// The runtime waits the longer of this and its own backoff.
    pub fn retrying_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
    /// The wait this error, or the first one it wraps that has one, asks for.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        self.chain().find_map(|e| e.retry_after)
    }
    /// Whether this error, or one it wraps, asks for the component to be built again.
    pub fn restarts_component(&self) -> bool {
        self.any_in_chain(|e| e.restart)
    }
    fn any_in_chain(&self, f: impl Fn(&Error) -> bool) -> bool {
        self.chain().any(f)
    }
    /// This error and the syncline errors it wraps, outermost first.
    fn chain(&self) -> impl Iterator<Item = &Error> {
        std::iter::successors(Some(self as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .filter_map(|e| e.downcast_ref::<Error>())
    }
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        let mut cause = self.source.as_deref().map(|e| e as &dyn std::error::Error);
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Extension to attach a kind and a message to any error.
pub trait Context<T> {
    fn context(self, kind: ErrorKind, message: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, kind: ErrorKind, message: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(kind, message()).with_source(e))
    }
}

pub mod kafka;
pub mod mysql;
pub mod postgres;
pub mod registry;
pub mod sqlite;

/// One row of a classification table: a code (or code prefix), the kind of
/// error it is, and why, in the operator's words.
pub type Row = (&'static str, ErrorKind, &'static str);
