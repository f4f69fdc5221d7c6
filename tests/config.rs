//! The configuration as an operator meets it: `deploy/ringmq.toml` documents
//! every setting with its true default, misspelled keys are refused by name,
//! and flags win over the file.

mod common;

use clap::{CommandFactory, Parser};
use ringmq::config::{Config, Settings};

const DEPLOY: &str = include_str!("../deploy/ringmq.toml");

/// The documented settings, uncommented: every `# key = value` line.
fn documented() -> (String, Vec<String>) {
    let mut text = String::new();
    let mut keys = Vec::new();
    for line in DEPLOY.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let Some((key, _)) = rest.split_once(" = ") else {
            continue;
        };
        if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.push(key.to_owned());
            text.push_str(rest);
            text.push('\n');
        }
    }
    (text, keys)
}

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    settings: Settings,
}

/// Every setting's key, taken from the flags (the same struct is the file's schema).
fn setting_keys() -> Vec<String> {
    let mut keys: Vec<String> = Flags::command()
        .get_arguments()
        .filter_map(|a| a.get_long())
        .map(|l| l.replace('-', "_"))
        .collect();
    keys.sort();
    keys
}

#[test]
fn deploy_file_documents_every_key_with_its_default() {
    let (text, mut keys) = documented();
    keys.sort();
    assert_eq!(
        keys,
        setting_keys(),
        "deploy/ringmq.toml must list every key once"
    );
    let parsed = Settings::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // Every value is set, so each documented default was actually parsed.
    assert!(!format!("{parsed:?}").contains("None"), "{parsed:?}");
    let config = parsed.into_config().expect("documented values apply");
    config.validate().expect("documented values are valid");
    assert_eq!(
        format!("{config:?}"),
        format!("{:?}", Config::default()),
        "a default documented in deploy/ringmq.toml differs from the built-in one"
    );
}

#[test]
fn a_misspelled_key_is_refused_by_name() {
    let err = Settings::from_toml("cores = 2\nsegmnt_bytes = \"64MiB\"\n").unwrap_err();
    assert!(err.contains("`segmnt_bytes`"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    let err = Settings::from_toml("shutdown_timeout = \"soon\"\n").unwrap_err();
    assert!(err.contains("`shutdown_timeout`"), "{err}");
    let err = Settings::from_toml("max_connections_per_shard = \"many\"\n").unwrap_err();
    assert!(err.contains("`max_connections_per_shard`"), "{err}");
}

#[test]
fn the_broker_refuses_a_bad_file_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringmq.toml");
    std::fs::write(&file, "data_dir = \"x\"\nretension = \"1day\"\n").unwrap();
    let file = file.to_str().unwrap();
    let (st, _, err) = common::cli(&["serve", "--config", file], "");
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("`retension`") && err.contains(file), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");

    std::fs::write(dir.path().join("ringmq.toml"), "cores = 0\n").unwrap();
    let (st, _, err) = common::cli(&["serve", "--config", file], "");
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(err.contains("`cores`"), "{err}");
}

#[test]
fn flags_override_the_file_which_overrides_defaults() {
    let file =
        Settings::from_toml("cores = 1\nshutdown_timeout = \"3s\"\nflush = \"every-batch\"\n")
            .unwrap();
    let flags = Flags::try_parse_from(["serve", "--cores", "2", "--segment-bytes", "64MiB"])
        .unwrap()
        .settings;
    let c = flags.or(file).into_config().unwrap();
    assert_eq!(c.cores, 2, "flag over file");
    assert_eq!(
        c.shutdown_timeout,
        std::time::Duration::from_secs(3),
        "file over default"
    );
    assert_eq!(c.log.flush, ringmq::log::FlushPolicy::EveryBatch);
    assert_eq!(c.log.segment_bytes, 64 << 20);
    assert_eq!(
        c.max_in_flight_per_connection,
        Config::default().max_in_flight_per_connection
    );
}
