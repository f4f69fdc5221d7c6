//! What every client subcommand shares: the `--bootstrap` and `--tls-*` flags, the small
//! executor the command runs on, and error sentences for the common cases.

use std::error::Error;
use std::future::Future;

use clap::Args;
use glommio::{LocalExecutorBuilder, Placement};
use ringmq_client::{Client, ClientConfig, ClientError, Password, SaslConfig, TlsOptions};
use ringmq_protocol::limits::MAX_GROUP_ID_LEN;
use ringmq_protocol::ErrorCode;

/// Where to find a broker.
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// Brokers to try, in order, until one answers.
    #[arg(
        long,
        env = "RINGMQ_BOOTSTRAP",
        value_name = "HOST:PORT[,HOST:PORT...]",
        default_value_t = default_bootstrap()
    )]
    pub bootstrap: String,
    /// Speak TLS, trusting brokers whose certificate chains to this PEM CA file.
    #[arg(long, env = "RINGMQ_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM certificate to show a broker that requires one (mutual TLS); needs --tls-key and --tls-ca.
    #[arg(
        long,
        env = "RINGMQ_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "RINGMQ_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// Authenticate as this user (SASL SCRAM-SHA-256); its password comes
    /// from --password-file, --password-stdin or RINGMQ_PASSWORD.
    #[arg(long, env = "RINGMQ_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// File whose first line is the --user's password.
    #[arg(long, value_name = "FILE", conflicts_with = "password_stdin")]
    pub password_file: Option<std::path::PathBuf>,
    /// Read the --user's password from the first line of stdin (with
    /// `produce`, the messages follow on the next lines).
    #[arg(long)]
    pub password_stdin: bool,
}

/// Where a password comes from: never the command line, which `ps` shows.
pub fn read_password(
    file: Option<&std::path::Path>,
    stdin: bool,
    env: &str,
) -> Result<Option<String>, String> {
    let line = |text: &str| text.lines().next().unwrap_or_default().to_owned();
    let password = if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the password file {}: {e}", path.display()))?;
        line(&text)
    } else if stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_line(&mut text)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        line(&text)
    } else {
        match std::env::var(env) {
            Ok(p) => p,
            Err(_) => return Ok(None),
        }
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(Some(password))
}

fn default_bootstrap() -> String {
    format!("127.0.0.1:{}", crate::config::DEFAULT_PORT)
}

impl BootstrapArgs {
    /// Connects to the first broker of the list that answers.
    pub async fn connect(&self) -> Result<Client, ClientError> {
        Client::connect(self.client_config()?).await
    }

    /// The client's settings: the bootstrap list, and TLS when asked for.
    pub fn client_config(&self) -> Result<ClientConfig, ClientError> {
        let mut config = ClientConfig::new(&self.bootstrap);
        config.connection.tls = match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => None,
            (None, _, _) => {
                return Err(ClientError::InvalidInput(
                    "--tls-cert and --tls-key need --tls-ca (the CA the brokers' certificates chain to)"
                        .into(),
                ))
            }
            (Some(ca), cert, key) => Some(TlsOptions::from_files(
                ca,
                cert.as_deref().zip(key.as_deref()),
            )?),
        };
        if let Some(user) = &self.user {
            let password = read_password(
                self.password_file.as_deref(),
                self.password_stdin,
                "RINGMQ_PASSWORD",
            )
            .map_err(ClientError::InvalidInput)?
            .ok_or_else(|| {
                ClientError::InvalidInput(format!(
                    "--user {user} needs a password: --password-file, --password-stdin or RINGMQ_PASSWORD"
                ))
            })?;
            config.connection.sasl = Some(SaslConfig {
                username: user.clone(),
                password: Password::new(password),
            });
        }
        Ok(config)
    }
}

/// Runs a client command to completion on a small executor of its own on
/// this thread (the client is built on glommio, like the broker).
pub fn block_on<T>(fut: impl Future<Output = T>) -> Result<T, Box<dyn Error>> {
    let ex = LocalExecutorBuilder::new(Placement::Unbound)
        .name("ringmq-cli")
        .io_memory(1 << 20)
        .make()
        .map_err(|e| format!("cannot start the client's executor: {e}"))?;
    Ok(ex.run(fut))
}

/// One sentence for a failure concerning `topic`: the common broker
/// answers in plain words, the rest as the client words them.
pub fn describe(e: &ClientError, topic: &str) -> String {
    match e.code() {
        Some(ErrorCode::UnknownTopic) => format!("topic {topic} does not exist"),
        Some(ErrorCode::TopicAlreadyExists) => format!("topic {topic} already exists"),
        Some(ErrorCode::InvalidTopicName) => format!("{topic:?} is not a valid topic name"),
        Some(ErrorCode::AuthFailed) => format!(
            "authentication failed ({e}); check --user and its password, or pass them if the broker requires them"
        ),
        _ => e.to_string(),
    }
}

/// One sentence for a failure of a group call about `group` (consuming
/// `topic`, if any).
pub fn describe_group_error(e: &ClientError, group: &str, topic: &str) -> String {
    match e.code() {
        Some(ErrorCode::UnknownApi) => {
            "the broker does not support consumer groups (it answered UNKNOWN_API)".to_owned()
        }
        Some(ErrorCode::InvalidGroupId) => format!(
            "{group:?} is not a valid group id: a group id is 1 to {MAX_GROUP_ID_LEN} bytes of \
             printable ASCII without spaces"
        ),
        Some(ErrorCode::UnknownMember) => format!(
            "group {group} no longer knows this member (its session expired, or another \
             consumer took its instance id); what it consumed since its last commit was not \
             committed"
        ),
        Some(ErrorCode::InvalidSessionTimeout) => {
            format!("the broker refused the session timeout: {e}")
        }
        _ => describe(e, topic),
    }
}

/// Like [`describe_group_error`], for a member started with `instance_id`:
/// being replaced by another process with the same instance id is said in
/// plain words.
pub fn describe_member_error(
    e: &ClientError,
    group: &str,
    instance_id: Option<&str>,
    topic: &str,
) -> String {
    match (e.code(), instance_id) {
        (Some(ErrorCode::FencedInstanceId), Some(id)) => {
            format!("another consumer joined group {group} with instance id {id}; this one stops")
        }
        _ => describe_group_error(e, group, topic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(code: ErrorCode) -> ClientError {
        ClientError::Broker {
            code,
            message: "whatever".into(),
        }
    }

    #[test]
    fn group_error_sentences() {
        assert_eq!(
            describe_group_error(&broker(ErrorCode::InvalidGroupId), "a b", "t"),
            "\"a b\" is not a valid group id: a group id is 1 to 249 bytes of printable ASCII \
             without spaces"
        );
        assert_eq!(
            describe_member_error(&broker(ErrorCode::FencedInstanceId), "g", Some("w1"), "t"),
            "another consumer joined group g with instance id w1; this one stops"
        );
        // The client's own check of an instance id is shown as it words it.
        let e = ClientError::InvalidInput("\"w 1\" is not a valid instance id".into());
        assert_eq!(
            describe_member_error(&e, "g", Some("w 1"), "t"),
            e.to_string()
        );
    }
}
