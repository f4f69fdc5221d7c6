//! Helpers for the data-driven tests whose cases live under `testdata/`.

/// Expands a case's comma-separated list: `p{a..b}` stands for pa, …, p(b−1).
pub fn expand(spec: &str) -> Vec<String> {
    let mut out = Vec::new();
    for token in spec.split(',').filter(|t| !t.is_empty()) {
        match (token.find('{'), token.find('}')) {
            (Some(open), Some(close)) => {
                let (prefix, suffix) = (&token[..open], &token[close + 1..]);
                let (a, b) = token[open + 1..close].split_once("..").expect("a..b");
                let (a, b): (usize, usize) = (a.parse().expect("a"), b.parse().expect("b"));
                out.extend((a..b).map(|i| format!("{prefix}{i}{suffix}")));
            }
            _ => out.push(token.to_string()),
        }
    }
    out
}
