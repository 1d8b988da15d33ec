//! Where each key and value of a YAML file is: `path -> (line, column)`, so
//! that an error found after parsing (by serde, or by a cross-reference
//! check) can still name the line and column the user must fix.

use std::collections::HashMap;
use std::fmt;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path from the document root, e.g. `sources.shop.tables[0].mode`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Path(pub Vec<Seg>);

impl Path {
    pub fn key(&self, k: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }
    pub fn index(&self, i: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
    /// Append a relative path written as `a.b[0].c` (component issue paths).
    pub fn join_str(&self, rel: &str) -> Path {
        let mut p = self.clone();
        for part in rel.split('.').filter(|s| !s.is_empty()) {
            let (name, rest) = part.split_once('[').unwrap_or((part, ""));
            if !name.is_empty() {
                p.0.push(Seg::Key(name.to_string()));
            }
            for idx in rest.split('[') {
                if let Ok(i) = idx.trim_end_matches(']').parse() {
                    p.0.push(Seg::Index(i));
                }
            }
        }
        p
    }
    /// Append a path reported by serde_path_to_error.
    pub fn join_serde(&self, rel: &serde_path_to_error::Path) -> Path {
        use serde_path_to_error::Segment;
        let mut p = self.clone();
        for seg in rel.iter() {
            match seg {
                Segment::Seq { index } => p.0.push(Seg::Index(*index)),
                Segment::Map { key } => p.0.push(Seg::Key(key.clone())),
                Segment::Enum { variant } => p.0.push(Seg::Key(variant.clone())),
                Segment::Unknown => {}
            }
        }
        p
    }
    fn parent(&self) -> Option<Path> {
        if self.0.is_empty() {
            None
        } else {
            Some(Path(self.0[..self.0.len() - 1].to_vec()))
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Line and column, both starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Default)]
pub struct PositionIndex {
    keys: HashMap<Path, Pos>,
    values: HashMap<Path, Pos>,
}

enum Frame {
    Map {
        path: Path,
        pending_key: Option<String>,
    },
    Seq {
        path: Path,
        next: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    index: PositionIndex,
}

fn pos(m: Marker) -> Pos {
    // yaml-rust2 lines start at 1, columns at 0.
    Pos {
        line: m.line(),
        column: m.col() + 1,
    }
}

impl Builder {
    /// The path of the node that starts now, registering it as a key if it is one.
    /// Returns None when the node is a mapping key (scalar keys only).
    fn node_path(&mut self, is_scalar: Option<&str>, at: Pos) -> Option<Path> {
        match self.stack.last_mut() {
            None => Some(Path::default()),
            Some(Frame::Seq { path, next }) => {
                let p = path.index(*next);
                *next += 1;
                Some(p)
            }
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some(k) => Some(path.key(&k)),
                None => {
                    let k = is_scalar.unwrap_or("").to_string();
                    self.index.keys.insert(path.key(&k), at);
                    *pending_key = Some(k);
                    None
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = pos(mark);
        match ev {
            Event::Scalar(v, ..) => {
                if let Some(p) = self.node_path(Some(&v), at) {
                    self.index.values.insert(p, at);
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.node_path(Some(""), at) {
                    self.index.values.insert(p, at);
                }
            }
            Event::MappingStart(..) => {
                let p = self.node_path(None, at).unwrap_or_default();
                self.index.values.insert(p.clone(), at);
                self.stack.push(Frame::Map {
                    path: p,
                    pending_key: None,
                });
            }
            Event::SequenceStart(..) => {
                let p = self.node_path(None, at).unwrap_or_default();
                self.index.values.insert(p.clone(), at);
                self.stack.push(Frame::Seq { path: p, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl PositionIndex {
    /// Index `text`. A file that does not parse gives an empty index (the
    /// YAML parser's own error, with its position, is reported instead).
    pub fn build(text: &str) -> Self {
        let mut b = Builder {
            stack: Vec::new(),
            index: PositionIndex::default(),
        };
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut b, false);
        b.index
    }

    /// Where the key `path` is written (or, failing that, its value, or the
    /// nearest enclosing node that exists).
    pub fn key_pos(&self, path: &Path) -> Pos {
        self.lookup(path, true)
    }

    /// Where the value at `path` starts (or the nearest enclosing node).
    pub fn value_pos(&self, path: &Path) -> Pos {
        self.lookup(path, false)
    }

    fn lookup(&self, path: &Path, key_first: bool) -> Pos {
        let mut p = Some(path.clone()).filter(|p| !p.0.is_empty());
        while let Some(cur) = p {
            let (a, b) = if key_first {
                (&self.keys, &self.values)
            } else {
                (&self.values, &self.keys)
            };
            if let Some(pos) = a.get(&cur).or_else(|| b.get(&cur)) {
                return *pos;
            }
            p = cur.parent();
        }
        Pos { line: 1, column: 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_values_in_nested_maps_and_lists() {
        let text = "name: x\nsources:\n  shop:\n    type: sql_poll\n    tables:\n      - table: a\n        mode: timestmp\n";
        let idx = PositionIndex::build(text);
        let p = Path::default()
            .key("sources")
            .key("shop")
            .key("tables")
            .index(0)
            .key("mode");
        assert_eq!(idx.key_pos(&p), Pos { line: 7, column: 9 });
        assert_eq!(
            idx.value_pos(&p),
            Pos {
                line: 7,
                column: 15
            }
        );
        assert_eq!(
            idx.key_pos(&Path::default().key("name")),
            Pos { line: 1, column: 1 }
        );
        // A path that does not exist falls back to its nearest parent.
        let missing = Path::default().key("sources").key("shop").key("schedule");
        assert_eq!(idx.key_pos(&missing), Pos { line: 3, column: 3 });
    }

    #[test]
    fn relative_paths_parse() {
        let p = Path::default()
            .key("sinks")
            .key("w")
            .join_str("tables[2].name");
        assert_eq!(p.to_string(), "sinks.w.tables[2].name");
    }
}
