//! Finds the line of a key in the config text, so validation errors found
//! after parsing can still point at the line to fix.

use std::fmt;

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, TableLike, Value};

/// A path to a config key, e.g. `sources[2].verify.algorithm`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl KeyPath {
    /// A path starting at a top-level key.
    pub fn root(key: &str) -> Self {
        Self(vec![Segment::Key(key.to_string())])
    }

    /// The path to `key` inside this table.
    pub fn key(mut self, key: &str) -> Self {
        self.0.push(Segment::Key(key.to_string()));
        self
    }

    /// The path to element `index` of this array.
    pub fn index(mut self, index: usize) -> Self {
        self.0.push(Segment::Index(index));
        self
    }

    /// Appends a dotted relative path such as `verify.algorithm`.
    pub fn join_dotted(self, dotted: &str) -> Self {
        dotted
            .split('.')
            .filter(|k| !k.is_empty())
            .fold(self, |path, key| path.key(key))
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The 1-based line where `path` (or the deepest part of it that exists)
/// is written in `text`; `None` for text that does not parse.
pub fn line_of(text: &str, path: &KeyPath) -> Option<usize> {
    let document = ImDocument::parse(text).ok()?;
    let mut node = Node::Item(document.as_item());
    let mut best: Option<usize> = None;
    for segment in &path.0 {
        let next = match segment {
            Segment::Key(key) => node.child_key(key),
            Segment::Index(index) => node.child_index(*index),
        };
        let Some((child, span)) = next else { break };
        if let Some(span) = span {
            best = Some(span.start);
        }
        node = child;
    }
    best.map(|offset| text[..offset.min(text.len())].matches('\n').count() + 1)
}

/// The path of the deepest key whose written value contains byte `offset`
/// of `text`: turns a parse error's position back into the key at fault.
pub fn key_at(text: &str, offset: usize) -> Option<KeyPath> {
    let document = ImDocument::parse(text).ok()?;
    let mut path = Vec::new();
    find_key_at(Node::Item(document.as_item()), offset, &mut path).then_some(KeyPath(path))
}

fn find_key_at(node: Node<'_>, offset: usize, path: &mut Vec<Segment>) -> bool {
    let contains = |span: Option<Range<usize>>| span.is_some_and(|s| s.start <= offset && offset <= s.end);
    if let Some(table) = node.table_like() {
        for (key, _) in table.iter() {
            let Some((child, key_span)) = node.child_key(key) else {
                continue;
            };
            let value_span = match &child {
                Node::Item(item) => item.span(),
                _ => None,
            };
            path.push(Segment::Key(key.to_string()));
            if find_key_at(child, offset, path) || contains(value_span) || contains(key_span) {
                return true;
            }
            path.pop();
        }
        return false;
    }
    let mut index = 0;
    while let Some((child, span)) = node.child_index(index) {
        path.push(Segment::Index(index));
        if find_key_at(child, offset, path) || contains(span) {
            return true;
        }
        path.pop();
        index += 1;
    }
    false
}

/// A place in the parsed document: toml_edit keeps tables, array-of-tables
/// elements and inline values as different types.
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

impl<'a> Node<'a> {
    fn table_like(&self) -> Option<&'a dyn TableLike> {
        match self {
            Node::Item(item) => item.as_table_like(),
            Node::Table(table) => Some(*table as &dyn TableLike),
            Node::Value(value) => value.as_inline_table().map(|t| t as &dyn TableLike),
        }
    }

    fn child_key(&self, key: &str) -> Option<(Node<'a>, Option<Range<usize>>)> {
        let (k, item) = self.table_like()?.get_key_value(key)?;
        Some((Node::Item(item), k.span().or_else(|| item.span())))
    }

    fn child_index(&self, index: usize) -> Option<(Node<'a>, Option<Range<usize>>)> {
        match self {
            Node::Item(item) => {
                if let Some(tables) = item.as_array_of_tables() {
                    tables.get(index).map(|t| (Node::Table(t), t.span()))
                } else {
                    item.as_array()?.get(index).map(|v| (Node::Value(v), v.span()))
                }
            }
            Node::Value(value) => value.as_array()?.get(index).map(|v| (Node::Value(v), v.span())),
            Node::Table(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nlisten = \"x\"\n\n[[sources]]\nname = \"a\"\n\n[[sources]]\nname = \"b\"\nsecrets = [\n  \"one\",\n  \"env:TWO\",\n]\nverify = { header = \"X\" }\n";

    #[test]
    fn finds_nested_keys_array_elements_and_inline_tables() {
        assert_eq!(line_of(TEXT, &KeyPath::root("server").key("listen")), Some(2));
        assert_eq!(line_of(TEXT, &KeyPath::root("sources").index(1).key("name")), Some(8));
        assert_eq!(
            line_of(TEXT, &KeyPath::root("sources").index(1).key("secrets").index(1)),
            Some(11)
        );
        assert_eq!(
            line_of(TEXT, &KeyPath::root("sources").index(1).join_dotted("verify.header")),
            Some(13)
        );
    }

    #[test]
    fn a_missing_key_points_at_its_table() {
        assert_eq!(
            line_of(TEXT, &KeyPath::root("sources").index(0).key("provider")),
            Some(4)
        );
    }

    #[test]
    fn finds_the_key_at_an_offset() {
        let offset = TEXT.find("env:TWO").unwrap();
        assert_eq!(
            key_at(TEXT, offset).map(|k| k.to_string()).as_deref(),
            Some("sources[1].secrets[1]")
        );
        let offset = TEXT.find("\"X\"").unwrap();
        assert_eq!(
            key_at(TEXT, offset).map(|k| k.to_string()).as_deref(),
            Some("sources[1].verify.header")
        );
    }

    #[test]
    fn displays_like_the_config() {
        let path = KeyPath::root("sources").index(2).join_dotted("verify.algorithm");
        assert_eq!(path.to_string(), "sources[2].verify.algorithm");
    }
}
