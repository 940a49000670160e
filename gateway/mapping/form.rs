//! `application/x-www-form-urlencoded` bodies as JSON, PHP style (ActiveCampaign posts these):
//! `contact[fields][plan]=pro` → `{"contact":{"fields":{"plan":"pro"}}}`, repeated `tags[]` → a list.
//! Values are always text; a later plain key replaces an earlier one, as in PHP.

use serde_json::{Map, Value};

/// Parse a form body. Errors only on bytes that are not UTF-8 after decoding.
pub fn parse_form(body: &[u8]) -> Result<Value, String> {
    let mut root = Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        let (head, path) = split_key(&key);
        insert(&mut root, head, &path, Value::String(value.into_owned()));
    }
    if std::str::from_utf8(body).is_err() {
        return Err("the form body is not UTF-8".to_owned());
    }
    Ok(Value::Object(root))
}

/// `a[b][]` → ("a", ["b", ""]); a key with unbalanced brackets is taken literally.
fn split_key(key: &str) -> (&str, Vec<&str>) {
    let Some(open) = key.find('[') else {
        return (key, Vec::new());
    };
    if open == 0 {
        return (key, Vec::new());
    }
    let mut parts = Vec::new();
    let mut rest = &key[open..];
    while let Some(r) = rest.strip_prefix('[') {
        let Some(close) = r.find(']') else {
            return (key, Vec::new());
        };
        parts.push(&r[..close]);
        rest = &r[close + 1..];
    }
    if !rest.is_empty() {
        return (key, Vec::new());
    }
    (&key[..open], parts)
}

fn insert(map: &mut Map<String, Value>, key: &str, path: &[&str], value: Value) {
    let Some((next, rest)) = path.split_first() else {
        map.insert(key.to_owned(), value);
        return;
    };
    if next.is_empty() {
        // `key[]`: append to a list.
        let slot = map
            .entry(key.to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if !slot.is_array() {
            *slot = Value::Array(Vec::new());
        }
        if let Value::Array(items) = slot {
            if rest.is_empty() {
                items.push(value);
            } else {
                let mut inner = Map::new();
                insert(&mut inner, rest[0], &rest[1..], value);
                items.push(Value::Object(inner));
            }
        }
        return;
    }
    let slot = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(inner) = slot {
        insert(inner, next, rest, value);
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn php_brackets() {
        let v = parse_form(b"type=subscribe&contact[email]=a%40b.c&contact[fields][plan]=pro&tags[]=x&tags[]=y&odd[=1").unwrap();
        assert_eq!(
            v,
            json!({"type": "subscribe", "contact": {"email": "a@b.c", "fields": {"plan": "pro"}}, "tags": ["x", "y"], "odd[": "1"})
        );
    }
}
