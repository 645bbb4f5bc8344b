//! `schema.graphql` is generated from the code: this fails when the committed file drifts.
//! Regenerate with `cargo run -- export-schema --output schema.graphql`.

#[test]
fn committed_schema_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.graphql");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = resolvers::sdl();
    assert!(
        committed == generated,
        "schema.graphql is out of date; run `cargo run -- export-schema --output schema.graphql`"
    );
}

#[test]
fn every_type_field_and_value_is_documented() {
    let sdl = resolvers::sdl();
    let mut undocumented = Vec::new();
    let mut in_description = false;
    let mut described = false;
    for line in sdl.lines() {
        let t = line.trim();
        if t.is_empty() || t == "}" || t.starts_with(')') {
            continue;
        }
        if t.starts_with("\"\"\"") {
            let single_line = t.len() > 3 && t.ends_with("\"\"\"");
            if !single_line {
                in_description = !in_description;
            }
            described = !in_description;
            continue;
        }
        if in_description {
            continue;
        }
        if !described
            && !t.starts_with("schema")
            && !t.starts_with("query:")
            && !t.starts_with("subscription:")
            && !t.starts_with("mutation:")
            && !t.starts_with("directive ")
        {
            undocumented.push(t.to_owned());
        }
        described = false;
    }
    assert!(
        undocumented.is_empty(),
        "undocumented in the SDL: {undocumented:#?}"
    );
}
