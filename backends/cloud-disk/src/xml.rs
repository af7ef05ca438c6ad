//! Reading EC2's XML: elements are matched by local name, so the namespace of whichever
//! API version answered (`xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"`) does not
//! matter, and lists are the EC2 shape `<fooSet><item>…</item>…</fooSet>`.
//!
//! Only direct children are searched: nested `item`s of other lists are never mistaken for
//! the ones asked for.

use std::str::FromStr;

use roxmltree::{Document, Node};

/// Parses a response body. Leading whitespace is skipped (some servers put a newline
/// before the XML declaration, which XML itself does not allow).
pub fn parse(body: &str) -> Result<Document<'_>, String> {
    Document::parse(body.trim_start()).map_err(|error| format!("not XML: {error}"))
}

/// The first child element called `name`.
pub fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children().find(|child| child.is_element() && child.tag_name().name() == name)
}

/// The `item` elements of the child list `set`; none when the list is absent.
pub fn items<'a, 'input>(node: Node<'a, 'input>, set: &str) -> impl Iterator<Item = Node<'a, 'input>> {
    child(node, set)
        .into_iter()
        .flat_map(|list| list.children())
        .filter(|item| item.is_element() && item.tag_name().name() == "item")
}

/// The trimmed text of the child `name`; `None` when it is absent or empty (`<snapshotId/>`).
pub fn text<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name).and_then(|child| child.text()).map(str::trim).filter(|text| !text.is_empty())
}

/// Like [`text`], for a child every well-formed response has.
pub fn required<'a>(node: Node<'a, '_>, name: &str) -> Result<&'a str, String> {
    text(node, name).ok_or_else(|| format!("<{}> has no <{name}>", node.tag_name().name()))
}

/// The child `name` parsed as a number or boolean; `None` when absent or empty.
pub fn parsed<T: FromStr>(node: Node<'_, '_>, name: &str) -> Result<Option<T>, String> {
    text(node, name)
        .map(|text| {
            text.parse().map_err(|_| format!("<{name}> of <{}> is not valid: {text:?}", node.tag_name().name()))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
<?xml version="1.0" encoding="UTF-8"?>
<R xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
  <name> vol-1 </name>
  <empty/>
  <size>10</size>
  <bad>ten</bad>
  <outerSet>
    <item><innerSet><item><v>nested</v></item></innerSet><v>1</v></item>
    <other/>
    <item><v>2</v></item>
  </outerSet>
</R>"#;

    #[test]
    fn reads_by_local_name_through_the_namespace() {
        let doc = parse(DOC).unwrap();
        let root = doc.root_element();
        assert_eq!(text(root, "name"), Some("vol-1"));
        assert_eq!(text(root, "empty"), None);
        assert_eq!(text(root, "missing"), None);
        assert_eq!(required(root, "name"), Ok("vol-1"));
        assert_eq!(required(root, "empty"), Err("<R> has no <empty>".into()));
        assert_eq!(parsed::<u64>(root, "size"), Ok(Some(10)));
        assert_eq!(parsed::<u64>(root, "missing"), Ok(None));
        assert!(parsed::<u64>(root, "bad").unwrap_err().contains("\"ten\""));
    }

    #[test]
    fn items_are_direct_children_only() {
        let doc = parse(DOC).unwrap();
        let values: Vec<_> = items(doc.root_element(), "outerSet").map(|item| text(item, "v").unwrap()).collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(items(doc.root_element(), "noSet").count(), 0);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("<html><body>503 Service Unavailable").is_err());
        assert!(parse("").is_err());
    }
}
