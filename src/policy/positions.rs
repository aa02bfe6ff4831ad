//! Line and column of every node of a YAML document, by path (`rules[2].route`), so that
//! checks done after deserialisation can still point at the right place in the file.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Positions of the values (and of the keys) of a document.
#[derive(Debug, Default)]
pub struct Positions {
    values: HashMap<String, Pos>,
}

impl Positions {
    /// Reads the positions of `source`; an unparsable document gives an empty map
    /// (serde_yaml reports the syntax error itself).
    pub fn of(source: &str) -> Positions {
        let mut collector = Collector {
            lines: source.lines().collect(),
            ..Collector::default()
        };
        let mut parser = Parser::new_from_str(source);
        if parser.load(&mut collector, false).is_err() {
            return Positions::default();
        }
        Positions {
            values: collector.values,
        }
    }

    /// Position of the value at `path`, or of the closest ancestor that has one.
    pub fn get(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .values
                        .get("")
                        .copied()
                        .unwrap_or(Pos { line: 1, column: 1 })
                }
            }
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        first: bool,
    },
    Seq {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Collector<'s> {
    lines: Vec<&'s str>,
    stack: Vec<Frame>,
    values: HashMap<String, Pos>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Collector<'_> {
    /// Handles a node start; returns its path when it is a value (not a mapping key).
    fn node(&mut self, scalar: Option<&str>, pos: Pos) -> Option<String> {
        match self.stack.last_mut() {
            None => {
                self.values.insert(String::new(), pos);
                Some(String::new())
            }
            Some(Frame::Map { key, path, first }) => match key.take() {
                None => {
                    *key = Some(scalar.unwrap_or("?").to_string());
                    if std::mem::take(first) {
                        // A block mapping's start mark (and its keys' marks) point at the first
                        // `:`; where the mapping's text starts is the first key's line's content.
                        let line = self
                            .lines
                            .get(pos.line.saturating_sub(1))
                            .copied()
                            .unwrap_or("");
                        let is_flow = self.values.get(path.as_str()).is_some_and(|p| {
                            p.line == pos.line && line.as_bytes().get(p.column - 1) == Some(&b'{')
                        });
                        if !is_flow {
                            let indent = line.len() - line.trim_start_matches([' ', '-']).len();
                            self.values.insert(
                                path.clone(),
                                Pos {
                                    line: pos.line,
                                    column: indent + 1,
                                },
                            );
                        }
                    }
                    None
                }
                Some(k) => {
                    let p = join(path, &k);
                    self.values.insert(p.clone(), pos);
                    Some(p)
                }
            },
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.values.insert(p.clone(), pos);
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Collector<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match ev {
            Event::Scalar(ref value, ..) => {
                self.node(Some(value), pos);
            }
            Event::Alias(..) => {
                self.node(None, pos);
            }
            Event::MappingStart(..) => {
                let path = self.node(None, pos).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    first: true,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.node(None, pos).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_values() {
        let src = "a: 1\nrules:\n  - name: x\n    route: m\n  - name: y\n    route: n\n";
        let p = Positions::of(src);
        assert_eq!(p.get("a"), Pos { line: 1, column: 4 });
        assert_eq!(
            p.get("rules[1].route"),
            Pos {
                line: 6,
                column: 12
            }
        );
        assert_eq!(p.get("rules[1].missing"), Pos { line: 5, column: 5 });
        assert_eq!(p.get(""), Pos { line: 1, column: 1 });
        let p = Positions::of("x:\n  y: { a: 1 }\n");
        assert_eq!(p.get("x.y"), Pos { line: 2, column: 6 });
        assert_eq!(
            p.get("x.y.a"),
            Pos {
                line: 2,
                column: 11
            }
        );
    }
}
