//! `hookgate try MAPPING --payload FILE [--header 'Name: value']...`: print the actions one event
//! produces, as JSON. Exit 1 on a problem in the mapping or the payload, with the reason.
//! The payload is read by the `Content-Type` header when one is given, as the receiver reads it (a
//! form's charset included; a type the receiver refuses is refused here too); else by its file name
//! (`.form`/`.txt`/`.urlencoded` are forms, anything else JSON).

use crate::mapping::tests::{kind_of_file, parse_payload};
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
    let text = std::fs::read_to_string(mapping)
        .map_err(|e| format!("{}: cannot read: {e}", mapping.display()))?;
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
        if name.eq_ignore_ascii_case("content-type") {
            kind = BodyKind::from_content_type(Some(value))
                .map_err(|e| format!("--header {h:?}: the receiver would refuse it: {e}"))?;
        }
        event.headers.insert(name, value);
    }
    let bytes =
        std::fs::read(payload).map_err(|e| format!("{}: cannot read: {e}", payload.display()))?;
    event.body = parse_payload(&bytes, kind).map_err(|e| format!("{}: {e}", payload.display()))?;
    let actions = file
        .mapping
        .apply(&event)
        .map_err(|e| format!("{}: the event cannot be mapped: {e}", mapping.display()))?;
    serde_json::to_string_pretty(&actions).map_err(|e| e.to_string())
}
