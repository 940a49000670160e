//! Form bodies are read as PHP reads them: every case here, fixed and generated, is parsed by PHP's own
//! `parse_str` (the `php` binary, installed by `scripts/test`) and by hookgate, and the two JSON documents
//! must be the same text, key order included.
//!
//! Left out of the generated bodies, where hookgate differs from PHP on purpose (`gateway/payload/form.rs`):
//! nesting deeper than 64, bodies over its field cap, and bytes that are not UTF-8.

use hookgate::payload::{parse, BodyKind};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

/// PHP's reading of each body, as JSON; the top level is cast to an object, as hookgate always gives one.
fn php(bodies: &[String]) -> Vec<Value> {
    const SCRIPT: &str = r#"
        $out = [];
        foreach (json_decode(stream_get_contents(STDIN), true) as $body) {
            parse_str($body, $r);
            $out[] = (object) $r;
        }
        echo json_encode($out, JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR);
    "#;
    let mut child = Command::new("php")
        .args(["-d", "max_input_vars=100000", "-r", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("php is needed for this test (scripts/test installs php-cli)");
    let input = serde_json::to_vec(bodies).expect("bodies as JSON");
    child
        .stdin
        .take()
        .expect("php's stdin")
        .write_all(&input)
        .expect("write to php");
    let out = child.wait_with_output().expect("php ran");
    assert!(out.status.success(), "php failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("php printed JSON")
}

fn same_as_php(bodies: &[String]) {
    let theirs = php(bodies);
    assert_eq!(theirs.len(), bodies.len());
    for (body, want) in bodies.iter().zip(&theirs) {
        let ours = parse(BodyKind::utf8_form(), body.as_bytes(), 64)
            .unwrap_or_else(|e| panic!("hookgate refused {body:?}: {e}"));
        assert_eq!(
            ours.to_string(),
            want.to_string(),
            "form body {body:?}: hookgate (left) and PHP (right) differ"
        );
    }
}

#[test]
fn fixed_cases_match_php() {
    let cases = [
        // ActiveCampaign's own shape: custom fields by number, tags, dates with `+` for spaces.
        "type=subscribe&date_time=2013-07-18+17%3A21%3A08&initiated_by=admin&contact[id]=42\
         &contact[email]=ada%40example.org&contact[fields][1]=pro&contact[fields][12]=Berlin\
         &contact[tags]=vip%2C+beta&list=1",
        "tags[]=a&tags[]=b&tags[]=c",
        "a[0]=x&a[1]=y",
        "a[1]=x&a[0]=y",
        "a[]=x&a[5]=y&a[]=z",
        "a[007]=x&a[]=y",
        "a[-1]=x&a[]=y",
        "type=a&type=b",
        "a[b]=1&a=2",
        "a=2&a[b]=1",
        "a[b]=1&a[]=2",
        "a[b][c]=1&a[b][d]=2&a[e]=3",
        "a[b]c[d]=1",
        "a[b=1",
        "a[b[c=1",
        "a[b][c=1",
        "a[b[c]=1",
        "=foo&[x]=1&a",
        "0=a&1=b",
        "&&x=1&&",
        "x=%zz&y=%&z=%4",
        "k=caf%C3%A9&%C3%A9t%C3%A9=1",
        "a[]=1&a[][]=2&a[][x]=3",
        "a[99999999999]=x&a[]=y",
        "a[-5]=x&a[]=y&a[-0]=z",
        "a[+]=x&a[ ]=y&a[++]=z",
        "a[9223372036854775807]=x&a[]=y",
        "+a.b=1&a%00b=2&+%00=3&a+b[c.d]=4&a.b[c=5&x[y[z=6",
        "",
    ];
    same_as_php(&cases.map(String::from));
}

/// Bodies built from the pieces PHP's parser reacts to, from a fixed seed (printed on failure).
#[test]
fn generated_bodies_match_php() {
    const NAMES: &[&str] = &[
        "a", "b", "0", "1", "2", "10", "07", "x_y", "%61", "", "+a", "a.b", "a+b", "%00x", "a%00",
    ];
    const PIECES: &[&str] = &[
        "[",
        "]",
        "[]",
        "[a]",
        "[0]",
        "[1]",
        "[3]",
        "[b]",
        "%5B",
        "%5D",
        "c",
        "=",
        "[-2]",
        "[-0]",
        "[+]",
        "[++]",
        "[+a]",
        "[.]",
        "[9223372036854775807]",
        ".",
        "+",
    ];
    const VALUES: &[&str] = &[
        "v",
        "",
        "1",
        "a+b",
        "%26",
        "%3D",
        "%5B%5D",
        "caf%C3%A9",
        "=",
    ];
    let seed: u64 = rand::rng().random();
    let mut rng = StdRng::seed_from_u64(seed);
    let bodies: Vec<String> = (0..20_000)
        .map(|_| {
            let pairs = rng.random_range(0..6);
            (0..pairs)
                .map(|_| {
                    let mut pair = NAMES[rng.random_range(0..NAMES.len())].to_string();
                    for _ in 0..rng.random_range(0..5) {
                        pair.push_str(PIECES[rng.random_range(0..PIECES.len())]);
                    }
                    if rng.random_bool(0.9) {
                        pair.push('=');
                        pair.push_str(VALUES[rng.random_range(0..VALUES.len())]);
                    }
                    pair
                })
                .collect::<Vec<_>>()
                .join("&")
        })
        .collect();
    eprintln!("generated_bodies_match_php: seed {seed}");
    same_as_php(&bodies);
}
