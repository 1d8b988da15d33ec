//! Pagination: which request follows a page, and when a run of pages ends.
//!
//! Styles: page number, offset/limit, a cursor in the body (JSON path),
//! the next URL in the body, the `Link: <...>; rel="next"` header. A run
//! ends on the first of: an empty page; `has_more_path` false; no next
//! cursor/URL/link; a cursor or URL seen before in this run, or a page whose
//! body equals the previous one (an API that ignores the page parameter):
//! the pagination would loop forever, so it stops and says so
//! ([`Stop::Looping`], logged and counted by the source); `max_pages`.
//!
//! [`PageRequest`] is serializable: the source stores the next request with
//! its cursor after the broker acknowledged a page, so a crash resumes at
//! the page it was at.

use super::path::JsonPath;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// The values of `pagination.type`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PageKind {
    /// One request per run.
    #[default]
    None,
    /// `?page=1`, `?page=2`, ... (`param`, `start`, `size_param`/`size`).
    PageNumber,
    /// `?offset=0&limit=100`, `?offset=100&limit=100`, ...
    Offset,
    /// `?cursor=<the value at cursor_path in the last page>`.
    Cursor,
    /// The URL at `next_url_path` in the last page.
    NextUrl,
    /// The `rel="next"` URL of the `Link` header (RFC 8288).
    LinkHeader,
}

/// `pagination:` of an `http_poll` source.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PaginationConfig {
    #[serde(rename = "type", default)]
    pub kind: PageKind,
    /// The query parameter of the page number, offset or cursor. Default
    /// `page`, `offset`, `cursor`.
    #[serde(default)]
    pub param: Option<String>,
    /// The first page number (default 1) or offset (default 0).
    #[serde(default)]
    pub start: Option<u64>,
    /// The query parameter of the page size (`page_number`, optional) or
    /// limit (`offset`, default `limit`).
    #[serde(default)]
    pub size_param: Option<String>,
    /// Records per page asked for; with `offset` also the step (default 100).
    #[serde(default)]
    pub size: Option<u64>,
    /// `cursor`: where the next cursor is in the body, e.g. `$.meta.next_cursor`.
    #[serde(default)]
    pub cursor_path: Option<String>,
    /// `next_url`: where the next page's URL is in the body, e.g. `$.links.next`.
    #[serde(default)]
    pub next_url_path: Option<String>,
    /// A boolean in the body that is false on the last page, e.g. `$.has_more`.
    #[serde(default)]
    pub has_more_path: Option<String>,
    /// Pages per run at most (a safety stop). Default 10,000.
    #[serde(default = "default_max_pages")]
    pub max_pages: u64,
}

fn default_max_pages() -> u64 {
    10_000
}

impl Default for PaginationConfig {
    fn default() -> Self {
        Self {
            kind: PageKind::None,
            param: None,
            start: None,
            size_param: None,
            size: None,
            cursor_path: None,
            next_url_path: None,
            has_more_path: None,
            max_pages: default_max_pages(),
        }
    }
}

/// The request for one page, as stored between pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageRequest {
    /// The run's first request.
    First,
    Page(u64),
    Offset(u64),
    Cursor(String),
    Url(String),
}

/// Why a run of pages ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The style has one page per run.
    Single,
    EmptyPage,
    /// `has_more_path` said false.
    NoMore,
    /// No next cursor, URL or link.
    NoNext,
    /// The next cursor or URL was seen already in this run, or the page
    /// equals the one before: following it would loop forever.
    Looping(String),
    MaxPages(u64),
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Single => f.write_str("one request per run"),
            Stop::EmptyPage => f.write_str("an empty page"),
            Stop::NoMore => f.write_str("the page says there are no more"),
            Stop::NoNext => f.write_str("no next page"),
            Stop::Looping(why) => write!(f, "the pagination does not move ({why})"),
            Stop::MaxPages(n) => write!(f, "max_pages ({n}) reached"),
        }
    }
}

/// What the pager needs of a response.
pub struct Page<'a> {
    pub body: &'a Value,
    pub records: usize,
    /// The `Link` header, if any.
    pub link: Option<&'a str>,
}

/// The pagination of one source, and the state of the run it is in.
pub struct Pager {
    kind: PageKind,
    param: String,
    start: u64,
    size_param: Option<String>,
    size: Option<u64>,
    cursor_path: Option<JsonPath>,
    next_url_path: Option<JsonPath>,
    has_more_path: Option<JsonPath>,
    max_pages: u64,
    pages: u64,
    seen: HashSet<String>,
    last_body: Option<u64>,
}

fn parse(p: &Option<String>) -> Result<Option<JsonPath>, String> {
    p.as_deref().map(JsonPath::parse).transpose()
}

impl Pager {
    pub fn new(c: &PaginationConfig) -> Result<Pager, String> {
        let param = c.param.clone().unwrap_or_else(|| {
            match c.kind {
                PageKind::Offset => "offset",
                PageKind::Cursor => "cursor",
                _ => "page",
            }
            .to_string()
        });
        Ok(Pager {
            kind: c.kind,
            param,
            start: c
                .start
                .unwrap_or(if c.kind == PageKind::Offset { 0 } else { 1 }),
            size_param: c
                .size_param
                .clone()
                .or_else(|| (c.kind == PageKind::Offset).then(|| "limit".to_string())),
            size: c.size.or((c.kind == PageKind::Offset).then_some(100)),
            cursor_path: parse(&c.cursor_path)?,
            next_url_path: parse(&c.next_url_path)?,
            has_more_path: parse(&c.has_more_path)?,
            max_pages: c.max_pages,
            pages: 0,
            seen: HashSet::new(),
            last_body: None,
        })
    }

    /// What is wrong with `c`, by field.
    pub fn issues(c: &PaginationConfig) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for (field, p) in [
            ("cursor_path", &c.cursor_path),
            ("next_url_path", &c.next_url_path),
            ("has_more_path", &c.has_more_path),
        ] {
            if let Err(e) = parse(p) {
                out.push((field, e));
            }
        }
        match c.kind {
            PageKind::Cursor if c.cursor_path.is_none() => out.push((
                "cursor_path",
                "`type: cursor` needs `cursor_path`, where the next cursor is in the body, e.g. `$.meta.next_cursor`".into(),
            )),
            PageKind::NextUrl if c.next_url_path.is_none() => out.push((
                "next_url_path",
                "`type: next_url` needs `next_url_path`, e.g. `$.links.next`".into(),
            )),
            _ => {}
        }
        if c.max_pages == 0 {
            out.push(("max_pages", "must be at least 1".into()));
        }
        if c.size == Some(0) {
            out.push(("size", "must be at least 1".into()));
        }
        out
    }

    /// A new run starts (from its first page, or resumed at `at`).
    pub fn begin_run(&mut self) {
        self.pages = 0;
        self.seen.clear();
        self.last_body = None;
    }

    /// The query parameters of `req` (the URL stays the configured one
    /// unless [`Self::url`] says otherwise).
    pub fn query(&self, req: &PageRequest) -> Vec<(String, String)> {
        let mut q = Vec::new();
        match (self.kind, req) {
            (PageKind::PageNumber, PageRequest::First) => {
                q.push((self.param.clone(), self.start.to_string()))
            }
            (PageKind::PageNumber, PageRequest::Page(n)) => {
                q.push((self.param.clone(), n.to_string()))
            }
            (PageKind::Offset, PageRequest::First) => {
                q.push((self.param.clone(), self.start.to_string()))
            }
            (PageKind::Offset, PageRequest::Offset(n)) => {
                q.push((self.param.clone(), n.to_string()))
            }
            (PageKind::Cursor, PageRequest::Cursor(c)) => q.push((self.param.clone(), c.clone())),
            _ => {}
        }
        // Next URLs carry their own parameters.
        if !matches!(req, PageRequest::Url(_)) {
            if let (Some(p), Some(n)) = (&self.size_param, self.size) {
                q.push((p.clone(), n.to_string()));
            }
        }
        q
    }

    /// The URL of `req` when it is not the configured one.
    pub fn url<'a>(&self, req: &'a PageRequest) -> Option<&'a str> {
        match req {
            PageRequest::Url(u) => Some(u),
            _ => None,
        }
    }

    /// The request after `page` (which answered `req`), or why the run ends.
    pub fn next(&mut self, req: &PageRequest, page: &Page<'_>) -> Result<PageRequest, Stop> {
        self.pages += 1;
        if self.kind == PageKind::None {
            return Err(Stop::Single);
        }
        if page.records == 0 {
            return Err(Stop::EmptyPage);
        }
        if let Some(p) = &self.has_more_path {
            if p.get(page.body) == Some(&Value::Bool(false)) {
                return Err(Stop::NoMore);
            }
        }
        if self.pages >= self.max_pages {
            return Err(Stop::MaxPages(self.max_pages));
        }
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            page.body.to_string().hash(&mut h);
            h.finish()
        };
        if self.last_body.replace(fingerprint) == Some(fingerprint) {
            return Err(Stop::Looping("the page equals the one before".into()));
        }
        let next = match self.kind {
            PageKind::None => unreachable!("returned above"),
            PageKind::PageNumber => PageRequest::Page(match req {
                PageRequest::Page(n) => n + 1,
                _ => self.start + 1,
            }),
            PageKind::Offset => {
                let step = self.size.unwrap_or(page.records as u64).max(1);
                PageRequest::Offset(match req {
                    PageRequest::Offset(n) => n + step,
                    _ => self.start + step,
                })
            }
            PageKind::Cursor => {
                let path = self.cursor_path.as_ref().expect("checked: cursor_path");
                match path.get(page.body) {
                    Some(Value::String(s)) if !s.is_empty() => PageRequest::Cursor(s.clone()),
                    Some(Value::Number(n)) => PageRequest::Cursor(n.to_string()),
                    _ => return Err(Stop::NoNext),
                }
            }
            PageKind::NextUrl => {
                let path = self.next_url_path.as_ref().expect("checked: next_url_path");
                match path.get(page.body) {
                    Some(Value::String(s)) if !s.is_empty() => PageRequest::Url(s.clone()),
                    _ => return Err(Stop::NoNext),
                }
            }
            PageKind::LinkHeader => match page.link.and_then(next_link) {
                Some(u) => PageRequest::Url(u),
                None => return Err(Stop::NoNext),
            },
        };
        let token = match &next {
            PageRequest::Cursor(c) => Some(format!("cursor `{c}`")),
            PageRequest::Url(u) => Some(format!("URL `{u}`")),
            _ => None,
        };
        if let Some(t) = token {
            if !self.seen.insert(t.clone()) || Some(&next) == Some(req) {
                return Err(Stop::Looping(format!("{t} came back")));
            }
        }
        Ok(next)
    }
}

/// The `rel="next"` target of a `Link` header value.
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=").is_some_and(|r| {
                    r.trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
            })
            .then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pager(kind: PageKind, f: impl FnOnce(&mut PaginationConfig)) -> Pager {
        let mut c = PaginationConfig {
            kind,
            ..Default::default()
        };
        f(&mut c);
        assert!(Pager::issues(&c).is_empty(), "{:?}", Pager::issues(&c));
        Pager::new(&c).unwrap()
    }

    fn page(body: &Value, records: usize) -> Page<'_> {
        Page {
            body,
            records,
            link: None,
        }
    }

    #[test]
    fn page_numbers_and_offsets_advance_until_an_empty_page() {
        let mut p = pager(PageKind::PageNumber, |c| {
            c.size_param = Some("per_page".into());
            c.size = Some(50);
        });
        assert_eq!(
            p.query(&PageRequest::First),
            vec![
                ("page".into(), "1".into()),
                ("per_page".into(), "50".into())
            ]
        );
        let next = p.next(&PageRequest::First, &page(&json!([1]), 1)).unwrap();
        assert_eq!(next, PageRequest::Page(2));
        let next = p.next(&next, &page(&json!([2]), 1)).unwrap();
        assert_eq!(next, PageRequest::Page(3));
        assert_eq!(p.next(&next, &page(&json!([]), 0)), Err(Stop::EmptyPage));

        let mut p = pager(PageKind::Offset, |_| {});
        assert_eq!(
            p.query(&PageRequest::First),
            vec![
                ("offset".into(), "0".into()),
                ("limit".into(), "100".into())
            ]
        );
        assert_eq!(
            p.next(&PageRequest::First, &page(&json!([1]), 100)),
            Ok(PageRequest::Offset(100))
        );
    }

    #[test]
    fn an_api_that_ignores_the_page_parameter_is_not_followed_forever() {
        let mut p = pager(PageKind::PageNumber, |_| {});
        let same = json!({"items": [1, 2]});
        let next = p.next(&PageRequest::First, &page(&same, 2)).unwrap();
        assert!(matches!(
            p.next(&next, &page(&same, 2)),
            Err(Stop::Looping(_))
        ));
    }

    #[test]
    fn cursors_stop_when_absent_false_or_repeated() {
        let mut p = pager(PageKind::Cursor, |c| {
            c.cursor_path = Some("$.meta.next".into());
            c.has_more_path = Some("$.has_more".into());
        });
        let b1 = json!({"meta": {"next": "c2"}, "has_more": true, "n": 1});
        let next = p.next(&PageRequest::First, &page(&b1, 1)).unwrap();
        assert_eq!(next, PageRequest::Cursor("c2".into()));
        assert_eq!(p.query(&next), vec![("cursor".into(), "c2".into())]);
        let b2 = json!({"meta": {"next": "c3"}, "has_more": true, "n": 2});
        let next = p.next(&next, &page(&b2, 1)).unwrap();
        // The API hands out c2 again: a loop.
        let b3 = json!({"meta": {"next": "c2"}, "has_more": true, "n": 3});
        assert!(matches!(p.next(&next, &page(&b3, 1)), Err(Stop::Looping(m)) if m.contains("c2")));
        p.begin_run();
        let last = json!({"meta": {"next": "c9"}, "has_more": false});
        assert_eq!(
            p.next(&PageRequest::First, &page(&last, 1)),
            Err(Stop::NoMore)
        );
        p.begin_run();
        let end = json!({"meta": {"next": null}});
        assert_eq!(
            p.next(&PageRequest::First, &page(&end, 1)),
            Err(Stop::NoNext)
        );
    }

    #[test]
    fn next_urls_from_the_body_and_the_link_header() {
        let mut p = pager(PageKind::NextUrl, |c| {
            c.next_url_path = Some("$.links.next".into())
        });
        let b = json!({"links": {"next": "http://127.0.0.1:1/items?after=5"}});
        let next = p.next(&PageRequest::First, &page(&b, 1)).unwrap();
        assert_eq!(p.url(&next), Some("http://127.0.0.1:1/items?after=5"));
        assert!(p.query(&next).is_empty());

        assert_eq!(
            next_link(
                r#"<https://api.github.com/repositories/1/issues?page=1>; rel="prev", <https://api.github.com/repositories/1/issues?page=3>; rel="next""#
            ),
            Some("https://api.github.com/repositories/1/issues?page=3".into())
        );
        assert_eq!(next_link(r#"<https://x/?page=1>; rel="first""#), None);
        let mut p = pager(PageKind::LinkHeader, |_| {});
        let body = json!([1]);
        let with = Page {
            body: &body,
            records: 1,
            link: Some(r#"<http://h/p2>; rel="next""#),
        };
        assert_eq!(
            p.next(&PageRequest::First, &with),
            Ok(PageRequest::Url("http://h/p2".into()))
        );
    }

    #[test]
    fn max_pages_and_config_issues() {
        let mut p = pager(PageKind::PageNumber, |c| c.max_pages = 2);
        let next = p.next(&PageRequest::First, &page(&json!([1]), 1)).unwrap();
        assert_eq!(p.next(&next, &page(&json!([2]), 1)), Err(Stop::MaxPages(2)));
        let c = PaginationConfig {
            kind: PageKind::Cursor,
            max_pages: 0,
            ..Default::default()
        };
        let fields: Vec<_> = Pager::issues(&c).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["cursor_path", "max_pages"]);
    }
}
