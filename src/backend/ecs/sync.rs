//! A session directory in S3: `megatest run --sync s3://BUCKET/PREFIX` pushes it after every
//! checkpoint and at every end; `megatest resume s3://…` and `megatest ecs collect` pull it.
//!
//! What a push uploads under `PREFIX/`: the checkpoint documents, the snapshot objects
//! (content-addressed, so each once), a consistent copy of `session.db` (`VACUUM INTO`, never
//! the live file and its WAL), the reports, logs and metrics, and `status` last (a reader that
//! sees a new `status` sees the rest). Not uploaded: `project/` (restored from the last
//! checkpoint's snapshot), `api.token`, `api.addr` and `agents.toml` (secrets and addresses of
//! this machine; a resumed session makes its own), the live database files. A file unchanged
//! since the last push (same length and modification time) is not sent again.

use super::{Aws, AwsError};
use aws_sdk_s3::primitives::ByteStream;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// `s3://bucket/prefix`: the prefix without leading or trailing slashes (may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The key prefix.
    pub prefix: String,
}

impl S3Url {
    /// Parse `s3://bucket[/prefix]`. Errors: [`AwsError::BadUrl`].
    pub fn parse(url: &str) -> Result<S3Url, AwsError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| AwsError::BadUrl(url.into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid_bucket {
            return Err(AwsError::BadUrl(url.into()));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The key of `relative` under the prefix.
    pub fn key(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_string()
        } else {
            format!("{}/{relative}", self.prefix)
        }
    }

    /// The location `name` under this one.
    pub fn child(&self, name: &str) -> S3Url {
        S3Url {
            bucket: self.bucket.clone(),
            prefix: self.key(name.trim_matches('/')),
        }
    }

    /// The last segment of the prefix (a session's id, for `s3://b/sessions/<id>`).
    pub fn last_segment(&self) -> Option<&str> {
        self.prefix.rsplit('/').next().filter(|s| !s.is_empty())
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// True for files of a session directory a push leaves out (`relative` uses `/`).
pub fn excluded(relative: &str) -> bool {
    const NAMES: [&str; 7] = [
        ".disk_reserve",
        "api.token",
        "api.addr",
        "agents.toml",
        "session.db",
        "session.db-wal",
        "session.db-shm",
    ];
    NAMES.contains(&relative)
        || relative.starts_with("project/")
        || relative.ends_with(".tmp")
        || relative.contains("/.tmp")
}

/// What one push did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushReport {
    /// Files uploaded.
    pub files: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// Files left alone (unchanged, or objects already there).
    pub unchanged: u64,
}

/// Pushes one session directory to one S3 location, remembering what it sent.
pub struct Syncer {
    aws: Aws,
    url: S3Url,
    sent: tokio::sync::Mutex<HashMap<String, (u64, Option<SystemTime>)>>,
}

impl Syncer {
    /// A syncer for `url` once the bucket answers. Errors: [`AwsError::NoSuchBucket`], an
    /// API error.
    pub async fn new(aws: Aws, url: S3Url) -> Result<Syncer, AwsError> {
        check_bucket(&aws, &url.bucket).await?;
        Ok(Syncer {
            aws,
            url,
            sent: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Where it pushes.
    pub fn url(&self) -> &S3Url {
        &self.url
    }

    /// Upload what changed in the session directory `dir` (see the module docs); `status`
    /// last. Errors: an API error (what was sent before it stays sent).
    pub async fn push(&self, dir: &Path) -> Result<PushReport, AwsError> {
        let mut sent = self.sent.lock().await;
        let mut report = PushReport::default();
        let mut files = Vec::new();
        walk(dir, dir, &mut files).map_err(|e| AwsError::Io(format!("{}: {e}", dir.display())))?;
        // Objects first, then checkpoint documents, then the rest; `status` last.
        files.sort_by_key(|(relative, _)| {
            let rank = if relative.starts_with("checkpoints/objects/") {
                0
            } else if relative.starts_with("checkpoints/") {
                1
            } else if relative == "status" {
                3
            } else {
                2
            };
            (rank, relative.clone())
        });
        // The database: a consistent copy, uploaded before `status`.
        // Beside the database (same filesystem, left out of pushes by its name), removed after.
        let db_copy = dir.join(".megatest-sync.db.tmp");
        let _ = std::fs::remove_file(&db_copy);
        if dir.join("session.db").exists() {
            let source = dir.join("session.db");
            let target = db_copy.clone();
            tokio::task::spawn_blocking(move || {
                crate::store::Store::open_read_only(&source)?.copy_into(&target)
            })
            .await
            .map_err(|e| AwsError::Io(e.to_string()))?
            .map_err(|e| AwsError::Io(format!("copy session.db: {e}")))?;
            let position = files
                .iter()
                .position(|(relative, _)| relative == "status")
                .unwrap_or(files.len());
            files.insert(position, ("session.db".into(), db_copy.clone()));
        }
        let result = self.upload(files, &mut sent, &mut report).await;
        let _ = std::fs::remove_file(&db_copy);
        result.map(|_| report)
    }

    async fn upload(
        &self,
        files: Vec<(String, PathBuf)>,
        sent: &mut HashMap<String, (u64, Option<SystemTime>)>,
        report: &mut PushReport,
    ) -> Result<(), AwsError> {
        for (relative, path) in files {
            let meta = match std::fs::metadata(&path) {
                Ok(meta) => meta,
                Err(_) => continue, // gone since the walk (a temporary file)
            };
            let stamp = (meta.len(), meta.modified().ok());
            let immutable = relative.starts_with("checkpoints/objects/");
            match sent.get(&relative) {
                Some(_) if immutable => {
                    report.unchanged += 1;
                    continue;
                }
                Some(previous) if *previous == stamp && relative != "session.db" => {
                    report.unchanged += 1;
                    continue;
                }
                _ => {}
            }
            let bytes = std::fs::read(&path)
                .map_err(|e| AwsError::Io(format!("read {}: {e}", path.display())))?;
            let length = bytes.len() as u64;
            write(&self.aws, &self.url, &relative, bytes).await?;
            sent.insert(relative, stamp);
            report.files += 1;
            report.bytes += length;
        }
        Ok(())
    }
}

/// Pushes one session directory in the background (the session's loop never waits on S3,
/// except for the last push at its end).
pub struct SyncHandle {
    pushes: tokio::sync::mpsc::Sender<Option<tokio::sync::oneshot::Sender<bool>>>,
    /// Where it pushes.
    pub url: S3Url,
}

impl SyncHandle {
    /// Connect, check the bucket, upload `source_config` (the config file the session was
    /// started with) as `config.source.toml` once, and start the pusher of `dir`.
    /// Errors: no credentials or region, no such bucket, a bad URL, an API error.
    pub async fn start(
        url: &str,
        dir: PathBuf,
        source_config: Option<&Path>,
        settings: &super::AwsSettings,
    ) -> Result<SyncHandle, AwsError> {
        let url = S3Url::parse(url)?;
        let aws = Aws::connect(settings).await?;
        let syncer = Syncer::new(aws.clone(), url.clone()).await?;
        if let Some(config) = source_config.filter(|p| p.is_file()) {
            let bytes = std::fs::read(config)
                .map_err(|e| AwsError::Io(format!("read {}: {e}", config.display())))?;
            write(&aws, &url, SOURCE_CONFIG, bytes).await?;
        }
        let (pushes, mut asked) =
            tokio::sync::mpsc::channel::<Option<tokio::sync::oneshot::Sender<bool>>>(1);
        tokio::spawn(async move {
            while let Some(done) = asked.recv().await {
                let pushed = syncer.push(&dir).await;
                match &pushed {
                    Ok(report) => {
                        tracing::info!(message = "session synced", url = %syncer.url(), files = report.files, bytes = report.bytes, unchanged = report.unchanged)
                    }
                    Err(err) => {
                        tracing::warn!(message = "session sync failed", url = %syncer.url(), error = %err)
                    }
                }
                if let Some(done) = done {
                    let _ = done.send(pushed.is_ok());
                }
            }
        });
        Ok(SyncHandle { pushes, url })
    }

    /// Push soon (after a checkpoint); a push already waiting covers this one.
    pub fn soon(&self) {
        let _ = self.pushes.try_send(None);
    }

    /// Push now and wait for it, at most `limit` (wall time). True when it completed.
    pub async fn now(&self, limit: std::time::Duration) -> bool {
        let (done, wait) = tokio::sync::oneshot::channel();
        let pushed = async {
            self.pushes.send(Some(done)).await.ok()?;
            wait.await.ok()
        };
        matches!(tokio::time::timeout(limit, pushed).await, Ok(Some(true)))
    }
}

/// The name under a session's S3 location of the config file it was started with.
pub const SOURCE_CONFIG: &str = "config.source.toml";

/// Check, before anything is written, that `url` can take a session: credentials, region and
/// the bucket (a blocking call for the command line). Errors: as [`SyncHandle::start`].
pub fn check_location(url: &str, settings: &super::AwsSettings) -> Result<S3Url, AwsError> {
    let parsed = S3Url::parse(url)?;
    super::block_on(async {
        let aws = Aws::connect(settings).await?;
        check_bucket(&aws, &parsed.bucket).await
    })?;
    Ok(parsed)
}

/// Errors: [`AwsError::NoSuchBucket`] when `bucket` is not there.
pub async fn check_bucket(aws: &Aws, bucket: &str) -> Result<(), AwsError> {
    match aws.s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => Ok(()),
        Err(err) => {
            let missing = err
                .raw_response()
                .is_some_and(|r| r.status().as_u16() == 404)
                || matches!(
                    AwsError::code(&err).as_deref(),
                    Some("NotFound" | "NoSuchBucket")
                );
            if missing {
                Err(AwsError::NoSuchBucket(bucket.into()))
            } else {
                Err(AwsError::api("s3:HeadBucket", &err))
            }
        }
    }
}

/// Keys (relative to `url`'s prefix) under `url`.
pub async fn list(aws: &Aws, url: &S3Url) -> Result<Vec<String>, AwsError> {
    let prefix = if url.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", url.prefix)
    };
    let mut keys = Vec::new();
    let mut pages = aws
        .s3
        .list_objects_v2()
        .bucket(&url.bucket)
        .prefix(&prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| s3_error("s3:ListObjectsV2", &url.bucket, &err))?;
        for object in page.contents() {
            if let Some(relative) = object.key().and_then(|k| k.strip_prefix(&prefix)) {
                if !relative.is_empty() {
                    keys.push(relative.to_string());
                }
            }
        }
    }
    Ok(keys)
}

/// The text of one object (None: no such key).
pub async fn read_text(aws: &Aws, url: &S3Url, relative: &str) -> Result<Option<String>, AwsError> {
    Ok(read_bytes(aws, url, relative)
        .await?
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// The bytes of one object (None: no such key).
pub async fn read_bytes(
    aws: &Aws,
    url: &S3Url,
    relative: &str,
) -> Result<Option<Vec<u8>>, AwsError> {
    match aws
        .s3
        .get_object()
        .bucket(&url.bucket)
        .key(url.key(relative))
        .send()
        .await
    {
        Ok(object) => {
            let bytes = object
                .body
                .collect()
                .await
                .map_err(|e| AwsError::Io(format!("read {}: {e}", url.key(relative))))?;
            Ok(Some(bytes.into_bytes().to_vec()))
        }
        Err(err) if AwsError::code(&err).as_deref() == Some("NoSuchKey") => Ok(None),
        Err(err) => Err(s3_error("s3:GetObject", &url.bucket, &err)),
    }
}

/// Upload `bytes` as `relative` under `url`.
pub async fn write(aws: &Aws, url: &S3Url, relative: &str, bytes: Vec<u8>) -> Result<(), AwsError> {
    aws.s3
        .put_object()
        .bucket(&url.bucket)
        .key(url.key(relative))
        .body(ByteStream::from(bytes))
        .send()
        .await
        .map_err(|err| s3_error("s3:PutObject", &url.bucket, &err))?;
    Ok(())
}

/// Delete `relative` under `url` (no error when it is not there, as S3 answers).
pub async fn remove(aws: &Aws, url: &S3Url, relative: &str) -> Result<(), AwsError> {
    aws.s3
        .delete_object()
        .bucket(&url.bucket)
        .key(url.key(relative))
        .send()
        .await
        .map_err(|err| s3_error("s3:DeleteObject", &url.bucket, &err))?;
    Ok(())
}

/// An S3 error, [`AwsError::NoSuchBucket`] when that is what it says.
fn s3_error<E>(
    operation: &'static str,
    bucket: &str,
    err: &aws_sdk_s3::error::SdkError<E>,
) -> AwsError
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata + 'static,
{
    match AwsError::code(err).as_deref() {
        Some("NoSuchBucket") => AwsError::NoSuchBucket(bucket.into()),
        _ => AwsError::api(operation, err),
    }
}

/// Download everything under `url` into `dir` (created; files written through a temporary
/// name, so a broken download leaves no half file). Returns the number of files.
/// Errors: an API error, a file that cannot be written, a key that would leave `dir`.
pub async fn pull(aws: &Aws, url: &S3Url, dir: &Path) -> Result<u64, AwsError> {
    let keys = list(aws, url).await?;
    let mut count = 0;
    let mut made = HashSet::new();
    for relative in keys {
        if relative
            .split('/')
            .any(|part| part == ".." || part.is_empty())
        {
            return Err(AwsError::Io(format!(
                "refusing the key {relative:?}: it would leave {}",
                dir.display()
            )));
        }
        let target = dir.join(&relative);
        if let Some(parent) = target.parent() {
            if made.insert(parent.to_path_buf()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| AwsError::Io(format!("create {}: {e}", parent.display())))?;
            }
        }
        let Some(bytes) = read_bytes(aws, url, &relative).await? else {
            continue; // removed since the listing
        };
        crate::fsutil::write_atomic(&target, &bytes)
            .map_err(|e| AwsError::Io(format!("write {}: {e}", target.display())))?;
        count += 1;
    }
    Ok(count)
}

/// (relative path with `/`, path) of every file under `dir` a push takes.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let relative = relative.to_string_lossy().replace('\\', "/");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            if !excluded(&format!("{relative}/")) {
                walk(root, &path, out)?;
            }
        } else if kind.is_file() && !excluded(&relative) {
            out.push((relative, path));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_parse_and_secrets_and_the_workspace_stay_home() {
        let url = S3Url::parse("s3://megatest-sessions/sessions/abc/").unwrap();
        assert_eq!(url.bucket, "megatest-sessions");
        assert_eq!(url.prefix, "sessions/abc");
        assert_eq!(url.key("status"), "sessions/abc/status");
        assert_eq!(url.last_segment(), Some("abc"));
        assert_eq!(url.child("x").prefix, "sessions/abc/x");
        assert_eq!(S3Url::parse("s3://bkt").unwrap().key("a"), "a");
        for bad in ["http://b/x", "s3://", "s3://UPPER/x", "s3://a/x"] {
            assert!(
                matches!(S3Url::parse(bad), Err(AwsError::BadUrl(_))),
                "{bad}"
            );
        }
        for secret in [
            "api.token",
            "agents.toml",
            "session.db-wal",
            "project/src/main.rs",
            "project/",
        ] {
            assert!(excluded(secret), "{secret}");
        }
        for kept in [
            "status",
            "checkpoints/checkpoint_001.json",
            "report.html",
            "agents/agent-1/agent.log",
        ] {
            assert!(!excluded(kept), "{kept}");
        }
    }
}
