//! `hookgate try MAPPING --payload FILE [--header 'Name: value']...`: print the actions one event
//! produces, as JSON. Exit 1 on a problem in the mapping or the payload, with the reason.
//! The payload is read by the `Content-Type` header when one is given, as the receiver reads it (a
//! form's charset included; a type the receiver refuses is refused here too); else by its file name
//! (`.form`/`.txt`/`.urlencoded` are forms, anything else JSON).

use crate::mapping::tests::{kind_of_file, parse_json_members, parse_payload};
use crate::mapping::{parse_source_file, Event};
use crate::payload::BodyKind;
use std::path::Path;
use std::process::ExitCode;

pub fn run(mapping: &Path, payload: &Path, headers: &[String]) -> ExitCode {
    match try_event(mapping, payload, headers) {
        Ok(json) => {
            println!("{json}");
            if json == "[]" {
                eprintln!("no rule matched this event (check the `when:` of the rules, and the --header values)");
            }
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::FAILURE
        }
    }
}

/// The actions as pretty JSON, or the reason there are none.
pub fn try_event(mapping: &Path, payload: &Path, headers: &[String]) -> Result<String, String> {
    let text = crate::mapping::read_text(mapping).map_err(|d| d.render())?;
    let file = parse_source_file(mapping, &text).map_err(|diags| {
        diags
            .iter()
            .map(|d| d.render())
            .collect::<Vec<_>>()
            .join("\n\n")
    })?;
    let mut event = Event::default();
    let mut kind = kind_of_file(payload);
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
        let (name, value) = (name.trim(), value.trim());
        if http::HeaderName::from_bytes(name.as_bytes()).is_err()
            || http::HeaderValue::from_str(value).is_err()
        {
            return Err(format!(
                "--header {h:?}: not a header a sender could send (name or value)"
            ));
        }
        if name.eq_ignore_ascii_case("content-type") {
            let text_is_json =
                (file.head.verify.as_ref()).is_some_and(|v| v.preset.posts_json_as_text());
            kind = BodyKind::from_content_type_with(Some(value), text_is_json)
                .map_err(|e| format!("--header {h:?}: the receiver would refuse it: {e}"))?;
        }
        event.headers.insert(name, value);
    }
    let bytes = read_payload(payload, file.head.max_body)?;
    event.body = parse_payload(&bytes, kind).map_err(|e| format!("{}: {e}", payload.display()))?;
    parse_json_members(&mut event.body, &file)
        .map_err(|e| format!("{}: {e}", payload.display()))?;
    let actions = file
        .mapping
        .apply(&event)
        .map_err(|e| format!("{}: the event cannot be mapped: {e}", mapping.display()))?;
    serde_json::to_string_pretty(&actions).map_err(|e| e.to_string())
}

/// The payload file, refused as the receiver would refuse the body: above the source's `max_body` (or,
/// without one, the most any source may take), it is not read past that. A FIFO or device is refused
/// rather than read (`/dev/zero` never ends).
fn read_payload(path: &Path, max_body: Option<bytesize::ByteSize>) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let limit = max_body.unwrap_or(crate::config::MAX_BODY_CAP).as_u64();
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("{shown}: cannot read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!(
            "{shown}: larger than {} bytes, which the receiver refuses with 413 (the source's max_body, or the cap)",
            limit
        ));
    }
    Ok(bytes)
}
