//! The topic catalogue of a node: which topics exist and how many partitions
//! each has, persisted in the data dir so topics survive a restart.
//!
//! The file is rewritten whole on every change (write to a temporary file,
//! fsync, rename, fsync the directory), so a crash leaves either the old or
//! the new catalogue, never a torn one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "topics.json";

/// One topic as the catalogue knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: u32,
    pub replication: u16,
    /// Creation time, ms since the Unix epoch; tells two incarnations of a name apart.
    pub created_ms: i64,
    /// In a cluster, the topic's id in the cluster metadata (0 on a single
    /// node): a topic deleted and created again gets a new one.
    #[serde(default)]
    pub cluster_id: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read topic catalogue {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("topic catalogue {path} is damaged: {source}; restore it or remove it to start empty")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write topic catalogue {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The catalogue: topic name → definition, in name order.
pub type Catalogue = BTreeMap<String, TopicMeta>;

/// Reads the catalogue from `data_dir`; a missing file is an empty catalogue.
pub fn load(data_dir: &Path) -> Result<Catalogue, CatalogError> {
    let path = data_dir.join(FILE_NAME);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Catalogue::new()),
        Err(source) => return Err(CatalogError::Read { path, source }),
    };
    let topics: Vec<TopicMeta> =
        serde_json::from_slice(&text).map_err(|source| CatalogError::Parse { path, source })?;
    Ok(topics.into_iter().map(|t| (t.name.clone(), t)).collect())
}

/// Replaces the catalogue in `data_dir` atomically and durably. Blocking:
/// call it from a blocking pool, not an executor thread.
pub fn store(data_dir: &Path, topics: &Catalogue) -> Result<(), CatalogError> {
    let path = data_dir.join(FILE_NAME);
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let write = || -> std::io::Result<()> {
        let list: Vec<&TopicMeta> = topics.values().collect();
        let text = serde_json::to_vec_pretty(&list)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|source| CatalogError::Write { path, source })
}

/// Directory of one partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(topic).join(partition.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_survives_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let mut c = Catalogue::new();
        c.insert(
            "orders".into(),
            TopicMeta {
                name: "orders".into(),
                partitions: 8,
                replication: 1,
                created_ms: 1,
                cluster_id: 7,
            },
        );
        store(dir.path(), &c).unwrap();
        assert_eq!(load(dir.path()).unwrap(), c);
    }

    #[test]
    fn damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
    }
}
