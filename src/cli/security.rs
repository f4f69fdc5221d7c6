//! `ringmq user add|remove|list` and `ringmq acl add|remove|list`: users
//! (SASL SCRAM-SHA-256) and allow rules, managed over the client protocol
//! by a super user (or one allowed `alter` on the cluster). A new user's
//! password is read from a file, stdin or RINGMQ_NEW_PASSWORD, never the
//! command line; `user list` shows names and mechanisms only.

use std::error::Error;

use clap::{Args, Subcommand};
use ringmq_protocol::{AclBinding, Operation, PatternType, ResourceType};

use super::connect::{block_on, describe, read_password, BootstrapArgs};
use crate::auth::acl::{principal_of, AclRule, Pattern};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user, or set a new password for one.
    Add(UserAddArgs),
    /// Remove a user.
    Remove(UserNameArgs),
    /// List users: `NAME MECHANISM`.
    List(BootstrapArgs),
}

#[derive(Debug, Args)]
pub struct UserAddArgs {
    /// The user's name.
    name: String,
    /// File whose first line is the new user's password.
    #[arg(long, value_name = "FILE", conflicts_with = "new_password_stdin")]
    new_password_file: Option<std::path::PathBuf>,
    /// Read the new user's password from the first line of stdin (else
    /// RINGMQ_NEW_PASSWORD).
    #[arg(long)]
    new_password_stdin: bool,
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

#[derive(Debug, Args)]
pub struct UserNameArgs {
    name: String,
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allow a principal operations on a topic, a group or the cluster.
    Add(AclArgs),
    /// Remove rules added with the same arguments.
    Remove(AclArgs),
    /// List rules: `PRINCIPAL RESOURCE NAME PATTERN OPERATION`.
    List(BootstrapArgs),
}

#[derive(Debug, Args)]
pub struct AclArgs {
    /// Who: `User:alice` (or `alice`).
    #[arg(long)]
    principal: String,
    /// A topic name; `orders.*` means every topic starting with `orders.`.
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// A group id; `billing-*` means every group starting with `billing-`.
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// The cluster itself (operation `alter`: manage users, ACLs and quotas).
    #[arg(long, group = "resource")]
    cluster: bool,
    /// Match names starting with the given one.
    #[arg(long)]
    prefix: bool,
    /// Comma-separated: produce, consume, describe, create, delete (topics);
    /// join, describe, commit (groups); alter (cluster).
    #[arg(long, value_delimiter = ',', required = true)]
    operation: Vec<String>,
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

impl AclArgs {
    fn bindings(&self) -> Result<Vec<AclBinding>, String> {
        let principal = principal_of(&self.principal).map_err(|e| e.to_string())?;
        let (resource, name) = match (&self.topic, &self.group, self.cluster) {
            (Some(t), None, false) => (ResourceType::Topic, t.as_str()),
            (None, Some(g), false) => (ResourceType::Group, g.as_str()),
            (None, None, true) => (ResourceType::Cluster, ""),
            _ => return Err("name one of --topic, --group or --cluster".into()),
        };
        self.operation
            .iter()
            .map(|o| {
                let operation =
                    Operation::parse(o).ok_or_else(|| format!("unknown operation {o:?}"))?;
                let rule = AclRule {
                    principal: principal.clone(),
                    resource,
                    pattern: Pattern::parse(name, self.prefix),
                    operation,
                };
                rule.validate().map_err(|e| e.to_string())?;
                Ok(rule.to_binding())
            })
            .collect()
    }
}

pub fn run_user(cmd: UserCommand) -> Result<(), Box<dyn Error>> {
    block_on(async move {
        match cmd {
            UserCommand::Add(a) => {
                let password = read_password(
                    a.new_password_file.as_deref(),
                    a.new_password_stdin,
                    "RINGMQ_NEW_PASSWORD",
                )?
                .ok_or("the new user's password: --new-password-file, --new-password-stdin or RINGMQ_NEW_PASSWORD")?;
                let client = a.bootstrap.connect().await?;
                client
                    .admin()
                    .upsert_user(&a.name, &password)
                    .await
                    .map_err(|e| describe(&e, &a.name))?;
                println!("user {} set (SCRAM-SHA-256)", a.name);
            }
            UserCommand::Remove(a) => {
                let client = a.bootstrap.connect().await?;
                client
                    .admin()
                    .delete_user(&a.name)
                    .await
                    .map_err(|e| describe(&e, &a.name))?;
                println!("user {} removed", a.name);
            }
            UserCommand::List(a) => {
                let client = a.connect().await?;
                for u in client.admin().list_users().await? {
                    println!("{} {}", u.name, u.mechanism);
                }
            }
        }
        Ok(())
    })?
}

pub fn run_acl(cmd: AclCommand) -> Result<(), Box<dyn Error>> {
    block_on(async move {
        match cmd {
            AclCommand::Add(a) => alter(a, true).await?,
            AclCommand::Remove(a) => alter(a, false).await?,
            AclCommand::List(a) => {
                let client = a.connect().await?;
                for b in client.admin().list_acls().await? {
                    let name = match b.name.as_str() {
                        "" => "-",
                        n => n,
                    };
                    let pattern = match b.pattern {
                        PatternType::Literal => "literal",
                        PatternType::Prefix => "prefix",
                    };
                    println!(
                        "{} {} {name} {pattern} {}",
                        b.principal,
                        b.resource.as_str(),
                        b.operation.as_str()
                    );
                }
            }
        }
        Ok::<(), Box<dyn Error>>(())
    })?
}

async fn alter(a: AclArgs, add: bool) -> Result<(), Box<dyn Error>> {
    let bindings = a.bindings()?;
    let client = a.bootstrap.connect().await?;
    for b in bindings {
        let rule = AclRule::from_binding(b.clone());
        client
            .admin()
            .alter_acl(add, b)
            .await
            .map_err(|e| describe(&e, ""))?;
        println!("{} {rule}", if add { "added:" } else { "removed:" });
    }
    Ok(())
}
