//! Puts the fields of a response in the order the document selected them (GraphQL spec,
//! "Serialized Map Ordering"). async-graphql 7 inserts fields as their resolvers finish, so a
//! field waiting on a DataLoader lands after its siblings; people reading responses (GraphiQL,
//! logs) expect the document's order.

use std::collections::HashSet;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Selection, SelectionSet,
};
use async_graphql::{Name, Value};

/// Reorders `data` to follow the selected operation of `doc`.
pub fn order_like_document(data: &mut Value, doc: &ExecutableDocument, operation: Option<&str>) {
    let op = match (&doc.operations, operation) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        _ => None,
    };
    if let Some(op) = op {
        reorder(data, &[&op.node.selection_set.node], doc);
    }
}

/// The response keys selected by `sets` (fragments expanded), in document order, each with the
/// sub-selections that apply to it.
fn collect<'a>(
    sets: &[&'a SelectionSet],
    doc: &'a ExecutableDocument,
    out: &mut Vec<(&'a Name, Vec<&'a SelectionSet>)>,
    seen_fragments: &mut HashSet<&'a Name>,
) {
    for set in sets {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let key = &field.node.response_key().node;
                    let child = &field.node.selection_set.node;
                    match out.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, children)) => children.push(child),
                        None => out.push((key, vec![child])),
                    }
                }
                Selection::InlineFragment(fragment) => {
                    collect(
                        &[&fragment.node.selection_set.node],
                        doc,
                        out,
                        seen_fragments,
                    );
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if let Some(def) = doc.fragments.get(name)
                        && seen_fragments.insert(name)
                    {
                        collect(&[&def.node.selection_set.node], doc, out, seen_fragments);
                        seen_fragments.remove(name);
                    }
                }
            }
        }
    }
}

fn reorder(value: &mut Value, sets: &[&SelectionSet], doc: &ExecutableDocument) {
    match value {
        Value::List(items) => {
            for item in items {
                reorder(item, sets, doc);
            }
        }
        Value::Object(map) => {
            let mut keys = Vec::new();
            collect(sets, doc, &mut keys, &mut HashSet::new());
            let mut ordered = IndexMap::with_capacity(map.len());
            for (key, children) in keys {
                if let Some(mut child) = map.shift_remove(key) {
                    if children.iter().any(|c| !c.items.is_empty()) {
                        reorder(&mut child, &children, doc);
                    }
                    ordered.insert(key.clone(), child);
                }
            }
            // anything not named by the document (none expected) keeps its place at the end
            ordered.extend(map.drain(..));
            *map = ordered;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_selection_order_through_fragments_aliases_and_lists() {
        let doc = async_graphql::parser::parse_query(
            "query Q { b a: x ...F list { z y } } fragment F on Query { c ... on Query { d } }",
        )
        .unwrap();
        let mut data = Value::from_json(serde_json::json!({
            "d": 4, "list": [{ "y": 1, "z": 2 }, { "y": 3, "z": 4 }], "c": 3, "a": 2, "b": 1
        }))
        .unwrap();
        order_like_document(&mut data, &doc, Some("Q"));
        assert_eq!(
            serde_json::to_string(&data).unwrap(),
            r#"{"b":1,"a":2,"c":3,"d":4,"list":[{"z":2,"y":1},{"z":4,"y":3}]}"#
        );
    }
}
