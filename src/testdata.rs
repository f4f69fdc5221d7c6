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

/// The `*.txt` case files under `testdata/<dir>`, in name order.
pub fn case_files(dir: &str) -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no cases in {}", dir.display());
    files
}

/// Whether the expected outputs should be rewritten (`RINGMQ_REWRITE=1`).
pub fn rewrite_requested() -> bool {
    std::env::var_os("RINGMQ_REWRITE").is_some()
}
