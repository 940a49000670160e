//! One source file: the head (how to receive), `lookups`, `rules` and `tests`, compiled with every
//! problem located; and loading a set of files or directories.

use super::diagnostic::{self, Diagnostic};
use super::rule::Rule;
use super::tests as embedded;
use super::transform::Lookups;
use super::value::Env;
use super::yaml::{self, Ctx, Key, Kind, Loc, Node};
use super::{Mapping, SourceFile};
use crate::inbound::source::{DedupSpec, HandshakeSpec, OptionPlaces, ResponseSpec, SourceSpec};
use crate::inbound::verify::VerifySpec;
use crate::jsonpath::JsonPath;
use bytesize::ByteSize;
use ipnet::IpNet;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Map;
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const TOP_KEYS: &[&str] = &[
    "source",
    "description",
    "verify",
    "allow_ips",
    "dedup",
    "max_body",
    "response",
    "handshake",
    "parse_json",
    "lookups",
    "rules",
    "tests",
];

/// Parse and compile one source file; every problem found is returned.
pub fn parse_source_file(path: &Path, text: &str) -> Result<SourceFile, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let root = yaml::parse(&file, text).map_err(|d| vec![d])?;
    let mut ctx = Ctx::new(file.clone(), text);
    // Nothing but blanks and comments: said as such, at the top, not as a null found past the last line.
    if matches!(root.kind, Kind::Null) {
        let d = ctx.error_at(
            1,
            1,
            1,
            "the file holds no mapping: it is empty or only comments",
        );
        d.hint =
            Some("a mapping file starts with `source: <name>`; see docs/mappings.md".to_owned());
        return Err(ctx.diags);
    }
    let Some(top) = ctx.map(&root, "file", TOP_KEYS) else {
        return Err(ctx.diags);
    };
    if let Some(d) = top.get("description") {
        ctx.string(d, "description");
    }
    let head = head(&mut ctx, &root, top.get("source"));
    let lookups = lookups(&mut ctx, top.get("lookups"));
    let env = Env {
        lookups: &lookups,
        in_for_each: false,
    };
    let rules = rules(&mut ctx, top.get("rules"), env);
    unused_lookups(&mut ctx, top.get("lookups"), &lookups);
    let tests = match top.get("tests") {
        Some(n) => embedded::compile(&mut ctx, n),
        None => Vec::new(),
    };
    if let Some(head) = &head {
        missing_dedup(&mut ctx, &root, head);
    }
    let mut warnings = ctx.warnings;
    diagnostic::sort(&mut warnings);
    let mut diags = ctx.diags;
    conceal_literal_secrets(&root, &mut diags);
    diagnostic::sort(&mut diags);
    match (head, diags.is_empty()) {
        (Some(head), true) => Ok(SourceFile {
            path: path.to_path_buf(),
            hash: hex::encode(sha2::Sha256::digest(text.as_bytes())),
            head,
            mapping: Mapping { rules },
            tests,
            warnings,
        }),
        _ => Err(diags),
    }
}

/// The head keys, each deserialized on its own so that a problem in one does not hide the others.
fn head(ctx: &mut Ctx, root: &Node, source: Option<&Node>) -> Option<SourceSpec> {
    let text = ctx.text;
    let mut ok = true;
    let verify: Option<VerifySpec> = field(ctx, text, root, "verify", &mut ok);
    let allow_ips: Option<Vec<IpNet>> = field(ctx, text, root, "allow_ips", &mut ok);
    let dedup: Option<DedupSpec> = field(ctx, text, root, "dedup", &mut ok);
    let max_body: Option<ByteSize> = field(ctx, text, root, "max_body", &mut ok);
    let response: Option<ResponseSpec> = field(ctx, text, root, "response", &mut ok);
    let handshake: Option<HandshakeSpec> = field(ctx, text, root, "handshake", &mut ok);
    let name: Option<serde_saphyr::Spanned<String>> = field(ctx, text, root, "source", &mut ok);
    let parse_json = parse_json(ctx, root, &mut ok);
    match (source, &name) {
        (None, _) => {
            ctx.error(
                root.loc,
                "missing `source:` (the name served at POST /webhooks/{source})",
            );
            ok = false;
        }
        (Some(n), Some(name)) => {
            // `.` and `..` are dot-segments: clients resolve `/webhooks/..` to `/`, so no sender reaches them.
            let valid = !name.value.is_empty()
                && !matches!(name.value.as_str(), "." | "..")
                && name
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid {
                ctx.error(n.loc, format!("source `{}`: use letters, digits, `-`, `_` and `.` only, and not `.` or `..` alone (it is a segment of a URL path)", name.value));
                ok = false;
            }
        }
        _ => {}
    }
    let allow_ips = allow_ips.unwrap_or_default();
    if source.is_some() && verify.is_none() && allow_ips.is_empty() && ok {
        ctx.error(root.loc, "a source needs `verify:` (or at least `allow_ips:`): anyone could post to it otherwise")
            .hint = Some("e.g. verify: { preset: token, header: Authorization, prefix: \"Bearer \", secret: \"${env:MY_TOKEN}\" }".to_owned());
        ok = false;
    }
    if let Some(d) = &dedup {
        ok &= check_dedup(ctx, root, d);
    }
    if let Some(v) = &verify {
        ok &= check_single_use(ctx, root, v, dedup.as_ref());
        ok &= check_token_not_dedup_id(ctx, v, dedup.as_ref());
    }
    if max_body.is_some_and(|b| b.as_u64() == 0 || b > crate::config::MAX_BODY_CAP) {
        let at = entry(root, "max_body").map_or(root.loc, |(_, v)| v.loc);
        ctx.error(
            at,
            format!(
                "max_body: above 0 and at most {}",
                crate::config::MAX_BODY_CAP
            ),
        );
        ok = false;
    }
    // Compiled once, here: `serve` builds the source from the answer, `hookgate check` reports its problems.
    let response = match response.as_ref().map(ResponseSpec::compile) {
        None => None,
        Some(Ok(answer)) => Some(answer),
        Some(Err(problems)) => {
            let section = entry(root, "response");
            for (key, message) in problems {
                // At the value the problem is about, else at `response:`.
                let at = section
                    .and_then(|(_, v)| v.as_map())
                    .and_then(|m| m.iter().find(|(k, _)| k.name == key).map(|(_, v)| v.loc))
                    .unwrap_or_else(|| key_loc(root, "response"));
                ctx.error(at, message);
            }
            ok = false;
            None
        }
    };
    // The verifier's options and the spelling of its secret references (their values are read only
    // when serving), so that `hookgate check` finds a broken head before a deploy does.
    let verify_places = option_places(root, "verify");
    if let Some(Err(problems)) = verify.as_ref().map(VerifySpec::check) {
        for p in problems {
            let (line, column, width) = verify_places.of(&p);
            ctx.error_at(line, column, width, format!("verify: {p}"));
        }
        ok = false;
    }
    let name = name?;
    ok.then_some(SourceSpec {
        name,
        verify,
        allow_ips,
        dedup,
        max_body,
        response,
        handshake,
        parse_json,
        verify_places,
    })
}

/// `parse_json:` one path or a list of them, each naming one member by names and indexes: the member
/// whose text is replaced by the JSON document it holds.
fn parse_json(ctx: &mut Ctx, root: &Node, ok: &mut bool) -> Vec<JsonPath> {
    let Some((_, node)) = entry(root, "parse_json") else {
        return Vec::new();
    };
    let items: Vec<&Node> = match &node.kind {
        Kind::Seq(items) => items.iter().collect(),
        _ => vec![node],
    };
    let no_lookups = Lookups::default();
    let env = Env {
        lookups: &no_lookups,
        in_for_each: false,
    };
    let mut paths = Vec::new();
    for item in items {
        let path = ctx
            .string(item, "parse_json")
            .and_then(|s| super::value::compile_path(ctx, item, s, "parse_json", env));
        let Some(path) = path else {
            *ok = false;
            continue;
        };
        match path.direct_len() {
            Some(1..) => paths.push(path),
            Some(0) => {
                ctx.error(
                    item.loc,
                    "parse_json: `$` is the body itself, which is parsed already",
                )
                .hint =
                    Some("name the member that holds JSON text, e.g. $.mandrill_events".to_owned());
                *ok = false;
            }
            None => {
                ctx.error(
                    item.loc,
                    format!(
                        "parse_json: `{}` must name one member, by names and indexes only",
                        path.as_str()
                    ),
                )
                .hint = Some(
                    "e.g. $.mandrill_events or $.Records[0].Sns.Message: each is parsed in place"
                        .to_owned(),
                );
                *ok = false;
            }
        }
    }
    paths
}

/// Star out, in every excerpt, the values of `verify:` that are secrets written out: a literal where a
/// reference belongs (refused, but `hookgate check`'s output lands in CI logs), or a private key or
/// shared secret given as a public key. References, user names and public keys stay readable.
fn conceal_literal_secrets(root: &Node, diags: &mut [Diagnostic]) {
    const SECRET_OPTIONS: &[&str] = &[
        "secret",
        "secrets",
        "password",
        "passwords",
        "public_key",
        "public_keys",
    ];
    let Some(options) = entry(root, "verify").and_then(|(_, v)| v.as_map()) else {
        return;
    };
    let mut secrets = Vec::new();
    for (key, value) in options {
        if !SECRET_OPTIONS.contains(&key.name.as_str()) {
            continue;
        }
        let values = match &value.kind {
            Kind::Seq(items) => items.iter().collect(),
            _ => vec![value],
        };
        for node in values {
            let shown = match &node.kind {
                Kind::Str(text) => {
                    let text = text.trim_start();
                    text.starts_with("${")
                        || (key.name.starts_with("public_key")
                            && crate::inbound::verify::public_key_may_be_shown(text))
                }
                Kind::Null | Kind::Seq(_) | Kind::Map(_) => true,
                Kind::Bool(_) | Kind::Int(_) | Kind::UInt(_) | Kind::Float(_) => false,
            };
            if !shown {
                secrets.push(node.loc);
            }
        }
    }
    for d in diags.iter_mut() {
        let line = d.line;
        for at in secrets.iter().filter(|at| at.line == line) {
            d.conceal(at.column, at.width);
        }
    }
}

/// Where the top-level key `key` and each option under it are written.
fn option_places(root: &Node, key: &str) -> OptionPlaces {
    let place = |l: Loc| (l.line, l.column, l.width);
    let options = entry(root, key)
        .and_then(|(_, v)| v.as_map())
        .unwrap_or_default();
    // A list's items come before its key (`secrets[1]` before `secrets`), so a problem with one item
    // points at that item rather than at the list.
    let items = options.iter().flat_map(|(k, v)| match &v.kind {
        Kind::Seq(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("{}[{i}]", k.name), place(item.loc)))
            .collect(),
        _ => Vec::new(),
    });
    OptionPlaces {
        section: place(key_loc(root, key)),
        options: items
            .chain(options.iter().map(|(k, _)| (k.name.clone(), place(k.loc))))
            .collect(),
    }
}

/// `dedup`: exactly one of `id` (a path that compiles), `header` and `body: true`; `ttl` a duration.
fn check_dedup(ctx: &mut Ctx, root: &Node, d: &DedupSpec) -> bool {
    let at = key_loc(root, "dedup");
    let mut ok = true;
    let given = [d.id.is_some(), d.header.is_some(), d.body.is_some()];
    if d.body == Some(false) {
        ctx.error(
            at,
            "dedup: `body: false` keeps no id; leave `dedup:` out to store every request",
        );
        ok = false;
    } else if given.iter().filter(|g| **g).count() != 1 {
        ctx.error(
            at,
            "dedup: give exactly one of `id` (a JSONPath into the body), `header` or `body: true`",
        );
        ok = false;
    }
    if let Some(id) = &d.id {
        if let Err(e) = JsonPath::compile(&id.value) {
            let inner = e
                .offset
                .map_or(0, |o| id.value[..o.min(id.value.len())].chars().count());
            let at = yaml::loc(&id.referenced, ctx.text);
            let (line, col) = ctx.place_in(at, inner);
            ctx.error_at(line, col, 1, format!("dedup.id: {e}"));
            ok = false;
        }
    }
    if let Some(ttl) = &d.ttl {
        if let Err(message) = crate::inbound::source::dedup_ttl(&ttl.value) {
            ctx.error_at(
                ttl.referenced.line() as u32,
                ttl.referenced.column() as u32,
                ttl.value.chars().count() as u32,
                message,
            )
            .hint = Some("e.g. 72h, 30m, 7days".to_owned());
            ok = false;
        }
    }
    ok
}

/// A scheme whose signed requests stay valid for their whole window (Mailgun's signature covers a
/// timestamp and a random token, not the body; SNS's messages are resent, signature and all, for a day)
/// is sound only when each is taken once: the source must dedup on its id, for at least twice the replay
/// window (a request signed at the window's future edge stays fresh for two windows).
fn check_single_use(ctx: &mut Ctx, root: &Node, v: &VerifySpec, d: Option<&DedupSpec>) -> bool {
    let Some((token, why)) = v.required_dedup() else {
        return true;
    };
    let key_place = |key: &str| {
        let at = key_loc(root, key);
        (at.line, at.column, at.width)
    };
    let fix = format!("dedup: {{ id: {token} }}");
    // The same member however the path is spelled (`$['signature']['token']`), as the receive path reads it.
    let on_token = d
        .and_then(|d| d.id.as_ref())
        .is_some_and(|id| JsonPath::compile(&id.value).is_ok_and(|p| p.names_same_member(token)));
    if !on_token {
        let (line, column, width) = match (d, d.and_then(|d| d.id.as_ref())) {
            (_, Some(id)) => value_place(ctx, id),
            (Some(_), None) => key_place("dedup"),
            (None, _) => key_place("verify"),
        };
        ctx.error_at(
            line,
            column,
            width,
            format!("preset {} needs `{fix}`: {why}", v.preset),
        )
        .hint = Some(format!(
            "write `{fix}`: a retry carries the same id, so retries are caught too"
        ));
        return false;
    }
    let (Some(window), Some(d)) = (v.replay_window(), d) else {
        return true;
    };
    // An invalid `ttl` is reported by `check_dedup`.
    let Ok(ttl) = d.window() else {
        return true;
    };
    // A window so long that twice it overflows is longer than any dedup window too.
    let twice = window.checked_mul(2);
    if twice.is_some_and(|twice| ttl >= twice) {
        return true;
    }
    let (line, column, width) = match &d.ttl {
        Some(t) => value_place(ctx, t),
        None => key_place("dedup"),
    };
    let needed = twice.map_or_else(
        || "twice the replay window".to_owned(),
        |t| humantime::format_duration(t).to_string(),
    );
    ctx.error_at(
        line,
        column,
        width,
        format!(
            "dedup.ttl: at least twice the replay window ({needed}) for preset {}: an id must be refused for as long as its timestamp is fresh",
            v.preset
        ),
    );
    false
}

/// A token carried in the body (`field`) is redacted before the dedup id is read: as the id, it would make
/// every event after the first a duplicate.
fn check_token_not_dedup_id(ctx: &mut Ctx, v: &VerifySpec, d: Option<&DedupSpec>) -> bool {
    let (Some(field), Some(id)) = (&v.field, d.and_then(|d| d.id.as_ref())) else {
        return true;
    };
    let path = JsonPath::compile(&id.value).ok();
    if path.as_ref().and_then(JsonPath::member_names) != Some(vec![field.as_str()]) {
        return true;
    }
    let (line, column, width) = value_place(ctx, id);
    ctx.error_at(
        line,
        column,
        width,
        "dedup.id: this is the token (`field`), which is redacted before the id is read: every event would be a duplicate of the first",
    )
    .hint = Some("use the event's own id, such as $.lead_id".to_owned());
    false
}

/// Where a scalar value is written, `(line, column, width)`, its quotes included when it has them.
fn value_place(ctx: &Ctx, value: &serde_saphyr::Spanned<String>) -> (u32, u32, u32) {
    let (line, column) = (
        value.referenced.line() as u32,
        value.referenced.column() as u32,
    );
    let width =
        value.value.chars().count() as u32 + if quoted_at(ctx, line, column) { 2 } else { 0 };
    (line, column, width)
}

/// Whether the scalar written at `line:column` is quoted.
fn quoted_at(ctx: &Ctx, line: u32, column: u32) -> bool {
    ctx.text
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .and_then(|l| l.chars().nth(column.saturating_sub(1) as usize))
        .is_some_and(|c| c == '"' || c == '\'')
}

/// A key of a map node and its value.
fn entry<'n>(root: &'n Node, key: &str) -> Option<&'n (Key, Node)> {
    root.as_map()?.iter().find(|(k, _)| k.name == key)
}

/// Where a key of a map node is written (the node's own place when it is not).
fn key_loc(root: &Node, key: &str) -> Loc {
    entry(root, key).map_or(root.loc, |(k, _)| k.loc)
}

/// Deserialize one top-level key with serde-saphyr (the head types are serde types); its error is
/// reported located, and the other keys are still checked.
fn field<T: DeserializeOwned>(
    ctx: &mut Ctx,
    text: &str,
    root: &Node,
    key: &'static str,
    ok: &mut bool,
) -> Option<T> {
    entry(root, key)?;
    let mut opts = serde_saphyr::Options::default();
    opts.strict_booleans = true;
    opts.with_snippet = false;
    let seed = Pick::<T> {
        key,
        _t: PhantomData,
    };
    let result =
        serde_saphyr::with_deserializer_from_str_with_options(text, opts, |d| seed.deserialize(d));
    match result {
        Ok(v) => v,
        Err(e) => {
            let mut d = yaml::serde_error(&ctx.file, text, &e);
            d.message = format!("{key}: {}", d.message);
            ctx.diags.push(d);
            *ok = false;
            None
        }
    }
}

/// Deserializes the value of one key of the top-level map and skips the rest.
struct Pick<T> {
    key: &'static str,
    _t: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Pick<T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Pick<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<String>()? {
            if k == self.key {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// `lookups: { table: { key: value, ... } }`: keys are matched as text.
fn lookups(ctx: &mut Ctx, node: Option<&Node>) -> Lookups {
    let mut out = HashMap::new();
    let Some(node) = node else { return out };
    let Some(tables) = node.as_map() else {
        ctx.expected(node, "lookups", "a map of table names to tables");
        return out;
    };
    for (name, table) in tables {
        let Some(entries) = table.as_map() else {
            ctx.expected(
                table,
                &format!("lookups.{}", name.name),
                "a map of keys to values",
            );
            continue;
        };
        let mut map = Map::new();
        for (k, v) in entries {
            match v.kind {
                Kind::Map(_) | Kind::Seq(_) | Kind::Null => {
                    ctx.expected(
                        v,
                        &format!("lookups.{}.{}", name.name, k.name),
                        "a constant",
                    );
                }
                _ => {
                    map.insert(k.name.clone(), v.to_json());
                }
            }
        }
        out.insert(name.name.clone(), Arc::new(map));
    }
    out
}

/// A table under `lookups:` that no transform or condition names: likely a misspelt reference
/// elsewhere that fell back on something else, or a leftover. Each use holds the table's `Arc`.
fn unused_lookups(ctx: &mut Ctx, node: Option<&Node>, lookups: &Lookups) {
    let Some(tables) = node.and_then(Node::as_map) else {
        return;
    };
    for (name, _) in tables {
        if lookups
            .get(&name.name)
            .is_some_and(|t| Arc::strong_count(t) == 1)
        {
            ctx.warn(
                name.loc,
                format!("lookup table `{}` is never used", name.name),
            )
            .hint = Some(format!(
                "use it with then: [{{ lookup: {0} }}] or in: {{ lookup: {0} }}, or remove it",
                name.name
            ));
        }
    }
}

/// A sender that retries with a stable event id, on a source without `dedup`: a retry whose first
/// answer was lost (a timeout, a dropped connection) becomes a second event and its actions run twice.
fn missing_dedup(ctx: &mut Ctx, root: &Node, head: &SourceSpec) {
    let (None, Some(v)) = (&head.dedup, &head.verify) else {
        return;
    };
    let Some((fix, why)) = v.preset.suggested_dedup() else {
        return;
    };
    ctx.warn(
        key_loc(root, "verify"),
        format!("no `dedup`: {why}, so a retry of an event already stored becomes a second event"),
    )
    .hint = Some(format!("add `{fix}`"));
}

fn rules(ctx: &mut Ctx, node: Option<&Node>, env: Env) -> Vec<Rule> {
    let Some(node) = node else { return Vec::new() };
    let Kind::Seq(items) = &node.kind else {
        ctx.expected(node, "rules", "a list of rules");
        return Vec::new();
    };
    // Names are checked on the text, so a duplicate shows even when a rule has other problems.
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for item in items {
        let Some((_, name)) = entry(item, "name") else {
            continue;
        };
        let Some(text) = name.as_str() else { continue };
        if let Some(line) = seen.get(text) {
            ctx.error(
                name.loc,
                format!("rule name `{text}` is already used on line {line}"),
            )
            .hint = Some(
                "rule names must be unique: they are part of the actions' idempotency keys"
                    .to_owned(),
            );
        } else {
            seen.insert(text, name.loc.line);
        }
    }
    let mut out: Vec<Rule> = Vec::with_capacity(items.len());
    let mut stopper: Option<(String, u32)> = None;
    for (i, item) in items.iter().enumerate() {
        let rule = Rule::compile(ctx, item, i, env);
        if let Some((name, line)) = &stopper {
            let at = entry(item, "name").map_or(item.loc, |(_, n)| n.loc);
            ctx.warn(
                at,
                format!("this rule never runs: rule `{name}` (line {line}) matches every event and stops"),
            )
            .hint = Some(format!(
                "give rule `{name}` a `when:`, or move this rule above it"
            ));
        } else if let Some(r) = rule.as_ref().filter(|r| r.always_stops()) {
            stopper = Some((r.name.clone(), r.site.line));
        }
        out.extend(rule);
    }
    out
}

/// Expand directories to their `*.yaml`/`*.yml` files (any case; top level only, skipping dot names such
/// as a ConfigMap's `..data` and editors' `.x.yaml.swp`; symlinks are followed), sorted; each file named
/// is taken as is. A name that looks like a mapping file but is none (a dangling symlink, a directory, a
/// FIFO, a file over [`MAX_FILE_BYTES`]) is a problem, not skipped in silence: a link that lost its
/// target would otherwise take its source down as if it had been removed.
pub fn source_paths(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut diags = Vec::new();
    let problem =
        |p: &Path, message: String| Diagnostic::new(p.display().to_string(), 0, 0, message);
    for p in paths {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => match std::fs::read_dir(p) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .filter(|e| is_mapping_name(&e.file_name().to_string_lossy()))
                        .map(|e| e.path())
                        .collect();
                    found.sort();
                    for f in found {
                        match regular_file(&f) {
                            Ok(()) => files.push(f),
                            Err(why) => diags.push(problem(&f, why)),
                        }
                    }
                }
                Err(e) => diags.push(problem(p, format!("cannot read directory: {e}"))),
            },
            Ok(_) => match regular_file(p) {
                Ok(()) => files.push(p.clone()),
                Err(why) => diags.push(problem(p, why)),
            },
            Err(e) => diags.push(problem(p, format!("cannot read: {e}"))),
        }
    }
    (files, diags)
}

/// The most a mapping file may hold. Far above any real one (lookup tables included); it keeps a file
/// named by mistake (`/dev/zero`, a log) from being read until memory runs out.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// `*.yaml` or `*.yml` in any case, not hidden (`.x.yaml`, editors' `.x.yaml.swp`).
fn is_mapping_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.starts_with('.') && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
}

/// A mapping file's text: a regular file of at most [`MAX_FILE_BYTES`], in UTF-8; otherwise why not, at
/// the first byte that is not UTF-8 when that is the reason.
pub fn read_text(p: &Path) -> Result<String, Diagnostic> {
    let whole = |why: String| Diagnostic::new(p.display().to_string(), 0, 0, why);
    regular_file(p).map_err(whole)?;
    let bytes = std::fs::read(p).map_err(|e| whole(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        // Valid up to there, so lines and characters are counted as the parser counts them.
        let valid =
            std::str::from_utf8(&e.as_bytes()[..e.utf8_error().valid_up_to()]).unwrap_or_default();
        let line = valid.matches('\n').count() + 1;
        let column = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Diagnostic::new(
            p.display().to_string(),
            line as u32,
            column as u32,
            "a byte that is not UTF-8: save the file as UTF-8",
        )
    })
}

/// Ok for a regular file (through symlinks) of at most [`MAX_FILE_BYTES`]; otherwise why not.
fn regular_file(p: &Path) -> Result<(), String> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.len() > MAX_FILE_BYTES => Err(format!(
            "larger than {} MiB; a mapping file is not that large",
            MAX_FILE_BYTES / (1024 * 1024)
        )),
        Ok(m) if m.is_file() => Ok(()),
        Ok(m) if m.is_dir() => Err("a directory named like a mapping file".into()),
        Ok(_) => Err("not a regular file".into()),
        Err(e) => Err(format!("cannot read: {e}")),
    }
}

/// The source among `loaded` that checks single-use tokens (Mailgun's), when `sf` does too. Tokens are
/// remembered per source: with two such sources a captured signature could be taken once at each.
fn single_use_token_source<'a>(
    loaded: &'a [SourceFile],
    sf: &SourceFile,
) -> Option<&'a SourceFile> {
    let single_use = |f: &SourceFile| {
        f.head
            .verify
            .as_ref()
            .is_some_and(|v| v.single_use_token().is_some())
    };
    if !single_use(sf) {
        return None;
    }
    loaded.iter().find(|o| single_use(o))
}

/// Parse every file `source_paths` finds, and check that source names are unique across files, and that
/// at most one source checks single-use tokens.
pub fn load_files(paths: &[PathBuf]) -> (Vec<SourceFile>, Vec<Diagnostic>) {
    let (files, mut diags) = source_paths(paths);
    let mut out: Vec<SourceFile> = Vec::new();
    let mut seen = HashSet::new();
    for path in files {
        // One file named twice (`a.yaml ./a.yaml`, or a file and its directory) is read once.
        if !seen.insert(std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone())) {
            continue;
        }
        let text = match read_text(&path) {
            Ok(t) => t,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        match parse_source_file(&path, &text) {
            Ok(sf) => {
                // A clash with a file loaded before: reported at this file's `source:`, naming the other's.
                let at = &sf.head.name.referenced;
                let place = |o: &SourceFile| {
                    format!("{}:{}", o.path.display(), o.head.name.referenced.line())
                };
                let clash = |problem: String| {
                    Diagnostic::new(
                        path.display().to_string(),
                        at.line() as u32,
                        at.column() as u32,
                        problem,
                    )
                    .with_source(&text)
                };
                let name = &sf.head.name.value;
                if let Some(other) = out.iter().find(|o| o.head.name.value == *name) {
                    diags.push(clash(format!(
                        "source `{name}` is already defined in {}",
                        place(other)
                    )));
                } else if let Some(other) = single_use_token_source(&out, &sf) {
                    let problem = format!(
                        "source `{name}`: only one source may check Mailgun signatures, and `{}` does ({}): each source remembers the tokens it took, so a signature taken at one could be used again at another (a subaccount's event is signed with its primary account's key too)",
                        other.head.name.value,
                        place(other)
                    );
                    diags.push(clash(problem).with_hint(
                        "give every signing key to one source (`secrets: [..]`); its rules can tell the domains apart",
                    ));
                } else {
                    out.push(sf);
                }
            }
            Err(d) => diags.extend(d),
        }
    }
    (out, diags)
}
