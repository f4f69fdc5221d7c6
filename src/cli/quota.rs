//! `ringmq quota set|remove|list`: per-principal quotas kept with the users
//! and ACLs (SPEC.md 5.26), over the node's configured ones, changed at run
//! time by a super user (or one allowed `alter` on the cluster).

use std::error::Error;

use clap::{Args, Subcommand};
use ringmq_protocol::{QuotaBinding, QUOTA_DEFAULT, QUOTA_UNLIMITED};

use super::connect::{block_on, describe, BootstrapArgs};
use crate::auth::acl::principal_of;
use crate::config::parse_size;

#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Set a principal's quotas; a limit not given stays `default` (the
    /// node's configured value).
    Set(QuotaSetArgs),
    /// Remove a principal's quotas: the configured ones apply again.
    Remove(QuotaPrincipalArgs),
    /// List quotas: `PRINCIPAL PRODUCE_BYTES FETCH_BYTES REQUESTS`.
    List(BootstrapArgs),
}

#[derive(Debug, Args)]
pub struct QuotaSetArgs {
    /// Who: `User:alice` (or `alice`).
    principal: String,
    /// Produce bytes per second: a size (`64KiB`), `off` or `default`.
    #[arg(long, value_name = "SIZE|off|default", value_parser = parse_bytes_limit)]
    produce_bytes: Option<i64>,
    /// Fetch bytes per second: a size (`1MiB`), `off` or `default`.
    #[arg(long, value_name = "SIZE|off|default", value_parser = parse_bytes_limit)]
    fetch_bytes: Option<i64>,
    /// Requests per second: a number, `off` or `default`.
    #[arg(long, value_name = "N|off|default", value_parser = parse_count_limit)]
    requests: Option<i64>,
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

#[derive(Debug, Args)]
pub struct QuotaPrincipalArgs {
    principal: String,
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

/// `default`, `off`, or a positive limit parsed by `number`, as on the wire.
fn parse_limit(s: &str, number: impl Fn(&str) -> Result<u64, String>) -> Result<i64, String> {
    match s {
        "default" => Ok(QUOTA_DEFAULT),
        "off" => Ok(QUOTA_UNLIMITED),
        _ => match number(s)? {
            0 => Err("a limit of 0 would stop the principal for good; say `off` for none".into()),
            n => i64::try_from(n).map_err(|_| format!("{s} is too large")),
        },
    }
}

fn parse_bytes_limit(s: &str) -> Result<i64, String> {
    parse_limit(s, parse_size)
}

fn parse_count_limit(s: &str) -> Result<i64, String> {
    parse_limit(s, |s| {
        s.parse::<u64>()
            .map_err(|_| format!("{s:?} is not a number, `off` or `default`"))
    })
}

/// A wire value in words: `default`, `off`, or the number.
fn show(v: i64) -> String {
    match v {
        QUOTA_DEFAULT => "default".into(),
        QUOTA_UNLIMITED => "off".into(),
        n => n.to_string(),
    }
}

pub fn run_quota(cmd: QuotaCommand) -> Result<(), Box<dyn Error>> {
    block_on(async move {
        match cmd {
            QuotaCommand::Set(a) => {
                let principal = principal_of(&a.principal)?;
                let quota = QuotaBinding {
                    principal: principal.clone(),
                    produce_bytes: a.produce_bytes.unwrap_or(QUOTA_DEFAULT),
                    fetch_bytes: a.fetch_bytes.unwrap_or(QUOTA_DEFAULT),
                    requests: a.requests.unwrap_or(QUOTA_DEFAULT),
                };
                if [quota.produce_bytes, quota.fetch_bytes, quota.requests]
                    .iter()
                    .all(|v| *v == QUOTA_DEFAULT)
                {
                    return Err(
                        "give --produce-bytes, --fetch-bytes or --requests (to drop the quota: `ringmq quota remove`)"
                            .into(),
                    );
                }
                let client = a.bootstrap.connect().await?;
                client
                    .admin()
                    .set_quota(quota.clone())
                    .await
                    .map_err(|e| describe(&e, &principal))?;
                println!(
                    "quota of {principal} set: produce_bytes {} fetch_bytes {} requests {}",
                    show(quota.produce_bytes),
                    show(quota.fetch_bytes),
                    show(quota.requests)
                );
            }
            QuotaCommand::Remove(a) => {
                let principal = principal_of(&a.principal)?;
                let client = a.bootstrap.connect().await?;
                client
                    .admin()
                    .remove_quota(&principal)
                    .await
                    .map_err(|e| describe(&e, &principal))?;
                println!("quota of {principal} removed");
            }
            QuotaCommand::List(a) => {
                let client = a.connect().await?;
                let quotas = client.admin().list_quotas().await?;
                let rows: Vec<[String; 4]> = quotas
                    .into_iter()
                    .map(|q| {
                        [
                            q.principal,
                            show(q.produce_bytes),
                            show(q.fetch_bytes),
                            show(q.requests),
                        ]
                    })
                    .collect();
                print_table(
                    ["PRINCIPAL", "PRODUCE_BYTES", "FETCH_BYTES", "REQUESTS"],
                    &rows,
                );
            }
        }
        Ok::<(), Box<dyn Error>>(())
    })?
}

fn print_table(head: [&str; 4], rows: &[[String; 4]]) {
    let mut width = head.map(str::len);
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 4]| {
        let text: Vec<String> = cells
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(head);
    for row in rows {
        line([&row[0], &row[1], &row[2], &row[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_as_on_the_wire() {
        assert_eq!(parse_bytes_limit("64KiB"), Ok(65_536));
        assert_eq!(parse_bytes_limit("off"), Ok(QUOTA_UNLIMITED));
        assert_eq!(parse_bytes_limit("default"), Ok(QUOTA_DEFAULT));
        assert!(parse_bytes_limit("0").is_err());
        assert!(parse_bytes_limit("lots").is_err());
        assert_eq!(parse_count_limit("100"), Ok(100));
        assert!(parse_count_limit("-1").is_err());
        assert_eq!(show(QUOTA_DEFAULT), "default");
        assert_eq!(show(QUOTA_UNLIMITED), "off");
        assert_eq!(show(65_536), "65536");
    }
}
