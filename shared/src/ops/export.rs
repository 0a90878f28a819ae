//! Export (issue 4): a zip of chosen items, folders or entities as of a
//! snapshot, streamed into an S3 multipart upload as it is built.
//!
//! Three stages joined by bounded channels, so memory stays bounded whatever
//! the export's size: this task reads items from the repository (verified by
//! SHA-256) and sends their bytes; a blocking thread runs the `zip` crate's
//! streaming writer (data descriptors, ZIP64 when needed) and cuts its output
//! into parts; an upload task sends the parts. Mail is stored as `.eml`,
//! byte-identical to the backed-up MIME, under `<entity>/<folder path>/`; a
//! `manifest.csv` lists every entry (path, original name when renamed, size,
//! SHA-256, dates, subject) and every item that failed. When done, the job
//! holds a download link and the link is e-mailed.

pub mod names;

use crate::context::Context;
use crate::model::{Entity, ExportResult, Job, JobStatus};
use crate::ops::jobs::{self, JobError, Progress, folder_of};
use crate::repo::{CatalogEntry, ChunkId, Repo};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use chrono::{DateTime, Datelike, Timelike, Utc};
use names::Namer;
use std::io::Write;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Size of a multipart part (S3: at least 5 MiB but the last).
pub const PART_BYTES: usize = 16 * 1024 * 1024;
/// Items up to this size are read whole and verified before a byte of them
/// enters the zip (at most 4 wait in the channel: 32 MiB); larger ones are streamed (a failure midway is marked in
/// the manifest, never silently cut).
pub const BUFFERED_ITEM_BYTES: u64 = 8 * 1024 * 1024;
/// Entries at or above this size get ZIP64 headers.
const LARGE_ENTRY: u64 = 0xFFFF_0000;
/// Save progress every this many items.
const PROGRESS_EVERY: u64 = 500;

/// What the reading side tells the zip thread.
enum Cmd {
    Start {
        name: String,
        large: bool,
        modified: Option<zip::DateTime>,
    },
    Data(Vec<u8>),
    /// The entry is complete; its manifest line.
    End(String),
    /// An item that could not be read: a manifest line only.
    Note(String),
    Finish,
}

/// Cuts the zip stream into parts for the uploader.
struct PartSink {
    buf: Vec<u8>,
    parts: mpsc::Sender<Vec<u8>>,
    written: u64,
}

impl Write for PartSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= PART_BYTES {
            let rest = self.buf.split_off(PART_BYTES);
            let part = std::mem::replace(&mut self.buf, rest);
            self.parts
                .blocking_send(part)
                .map_err(|_| std::io::Error::other("the upload stopped"))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const MANIFEST_HEADER: &str = "path,original_name,entity,item,folder,size,sha256,received,sent,subject,status\n";

/// One CSV field, quoted when it must be (RFC 4180); formula-looking text is
/// prefixed so spreadsheets do not run it.
fn csv(field: &str) -> String {
    let field = if field.starts_with(['=', '+', '-', '@']) {
        format!("'{field}")
    } else {
        field.to_string()
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// The zip thread: entries in, parts out; the manifest goes last. Returns
/// the zip's size and entry count.
fn write_zip(mut cmds: mpsc::Receiver<Cmd>, parts: mpsc::Sender<Vec<u8>>) -> Result<(u64, u64), String> {
    let sink = PartSink {
        buf: Vec::with_capacity(PART_BYTES + 64 * 1024),
        parts,
        written: 0,
    };
    let mut zip = zip::ZipWriter::new_stream(sink);
    // The manifest is kept compressed until it is written: a line per entry
    // of a million-entry export must not hold memory.
    let mut manifest = zstd::Encoder::new(Vec::new(), 3).map_err(|e| e.to_string())?;
    manifest
        .write_all(MANIFEST_HEADER.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut entries = 0u64;
    let base = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        // Level 2: dynamic Huffman codes (level 1 of zlib-rs uses static ones, which gain nothing on base64).
        .compression_level(Some(2));
    while let Some(cmd) = cmds.blocking_recv() {
        match cmd {
            Cmd::Start { name, large, modified } => {
                let mut options = base.large_file(large);
                if let Some(t) = modified {
                    options = options.last_modified_time(t);
                }
                zip.start_file(name, options).map_err(|e| e.to_string())?;
                entries += 1;
            }
            Cmd::Data(bytes) => zip.write_all(&bytes).map_err(|e| e.to_string())?,
            Cmd::End(line) | Cmd::Note(line) => manifest.write_all(line.as_bytes()).map_err(|e| e.to_string())?,
            Cmd::Finish => {
                let packed = manifest.finish().map_err(|e| e.to_string())?;
                zip.start_file("manifest.csv", base).map_err(|e| e.to_string())?;
                let mut decoder = zstd::Decoder::new(packed.as_slice()).map_err(|e| e.to_string())?;
                std::io::copy(&mut decoder, &mut zip).map_err(|e| e.to_string())?;
                entries += 1;
                let mut sink = zip.finish().map_err(|e| e.to_string())?.into_inner();
                let last = std::mem::take(&mut sink.buf);
                if !last.is_empty() {
                    sink.parts
                        .blocking_send(last)
                        .map_err(|_| "the upload stopped".to_string())?;
                }
                return Ok((sink.written, entries));
            }
        }
    }
    Err("the export stopped before the zip was finished".into())
}

/// Sends parts as they come; returns the completed parts.
async fn upload_parts(
    s3: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    mut parts: mpsc::Receiver<Vec<u8>>,
) -> Result<Vec<CompletedPart>, String> {
    let mut done = Vec::new();
    let mut number = 1;
    while let Some(part) = parts.recv().await {
        let out = s3
            .upload_part()
            .bucket(&bucket)
            .key(&key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(part))
            .send()
            .await
            .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())?;
        done.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build(),
        );
        number += 1;
    }
    Ok(done)
}

fn zip_time(t: DateTime<Utc>) -> Option<zip::DateTime> {
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).ok()?,
        u8::try_from(t.month()).ok()?,
        u8::try_from(t.day()).ok()?,
        u8::try_from(t.hour()).ok()?,
        u8::try_from(t.minute()).ok()?,
        u8::try_from(t.second()).ok()?,
    )
    .ok()
}

fn meta_text<'a>(entry: &'a CatalogEntry, key: &str) -> &'a str {
    entry.meta.get(key).and_then(|v| v.as_str()).unwrap_or_default()
}

/// The folder of an entity's items in the zip: its display name, or address.
fn entity_dir(entity: &Entity) -> String {
    entity.address.clone().unwrap_or_else(|| entity.display_name.clone())
}

/// Where an export's zip lives: under `exports/`, the only prefix the export function may write.
pub fn export_key(job: &Job) -> String {
    format!("exports/{}/{}.zip", job.account_id, job.id)
}

/// Builds the zip of an export job (claimed by [`jobs::run`]), then finishes the job.
pub async fn build(ctx: &Context, job: &Job) -> Result<(), JobError> {
    let repo = Repo::open(ctx.repo_store.clone(), ctx.repo_keys.as_ref(), job.account_id.as_str()).await?;
    let mut selected = Vec::new();
    for selection in &job.selections {
        selected.push(jobs::resolve(ctx, &repo, &job.account_id, selection).await?);
    }
    let total: u64 = selected.iter().map(|(_, e)| e.len() as u64).sum();
    // A retry starts the zip again: the job counts what this attempt does.
    ctx.state
        .update_job(&job.account_id, &job.id, |j| {
            j.total = total;
            j.done = 0;
            j.failed = 0;
            j.bytes = 0;
            j.failures.clear();
            true
        })
        .await?;
    let needed: std::collections::HashSet<ChunkId> = selected
        .iter()
        .flat_map(|(_, entries)| entries.iter().flat_map(|e| e.chunks.iter().copied()))
        .collect();
    let index = repo.load_index_for(&needed).await?;
    drop(needed);
    let bucket = ctx.config.data_bucket.clone();
    let key = export_key(job);
    let created = ctx
        .s3
        .create_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .content_type("application/zip")
        .send()
        .await
        .map_err(|e| JobError::Upload(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
    let upload_id = created
        .upload_id()
        .ok_or_else(|| JobError::Upload("no upload id".into()))?
        .to_string();
    let outcome = stream_zip(ctx, job, &repo, &index, &selected, &bucket, &key, &upload_id).await;
    let (size, entries, renamed, parts) = match outcome {
        Ok(v) => v,
        Err(e) => {
            let _ = ctx
                .s3
                .abort_multipart_upload()
                .bucket(&bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await;
            return Err(e);
        }
    };
    ctx.s3
        .complete_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await
        .map_err(|e| JobError::Upload(aws_sdk_s3::error::DisplayErrorContext(e).to_string()))?;
    let token = crate::secrets::random_token();
    let expires_at = Utc::now() + chrono::Duration::seconds(i64::try_from(job.link_expiry_secs).unwrap_or(604_800));
    let download_url = download_link(ctx.config.api_base_url.as_deref().unwrap_or(""), job, &token);
    // The job keeps only the token's hash; the link itself goes out by e-mail.
    let result = ExportResult {
        key,
        bytes: size,
        entries,
        renamed,
        expires_at,
        token_sha256: crate::secrets::sha256_hex(&token),
    };
    let job = jobs::save_progress(
        ctx,
        job,
        &mut Progress::default(),
        Some((JobStatus::Done, None)),
        Some(result),
    )
    .await?;
    info!(job = %job.id, bytes = size, entries, "export done");
    if !job.notify.is_empty() {
        let email = export_email(&job, &download_url, expires_at);
        // The zip is there and the job says so: a failed e-mail is logged, not retried forever.
        if let Err(e) = ctx.mailer.send(&email).await {
            warn!(job = %job.id, error = %e, "export e-mail not sent");
        }
    }
    Ok(())
}

/// The e-mail that carries an export's download link.
pub fn export_email(job: &Job, link: &str, expires_at: DateTime<Utc>) -> crate::notify::Email {
    let until = expires_at.format("%Y-%m-%d %H:%M UTC");
    let size = job.result.as_ref().map_or(0, |r| r.bytes);
    crate::notify::Email {
        to: job.notify.clone(),
        subject: format!("Your Strata export is ready ({} items)", job.done),
        text: format!(
            "Your export of {} items ({} failed, {:.1} MB) is ready.\n\nDownload it until {until}:\n{link}\n\nThe link works for anyone who has it: do not forward this e-mail.\n",
            job.done,
            job.failed,
            size as f64 / 1e6
        ),
        html: format!(
            "<p>Your export of {} items ({} failed, {:.1} MB) is ready.</p><p><a href=\"{}\">Download the zip</a> (until {until}).</p><p>The link works for anyone who has it: do not forward this e-mail.</p>",
            job.done,
            job.failed,
            size as f64 / 1e6,
            crate::notify::html_escape(link)
        ),
    }
}

/// The link an e-mail carries: the API checks the token and the expiry, then
/// redirects to a short-lived presigned GET of the zip.
pub fn download_link(api_base: &str, job: &Job, token: &str) -> String {
    format!("{api_base}/v1/downloads/{}/{}?token={token}", job.account_id, job.id)
}

#[allow(clippy::too_many_arguments)]
async fn stream_zip(
    ctx: &Context,
    job: &Job,
    repo: &Repo,
    index: &crate::repo::ChunkIndex,
    selected: &[(Entity, Vec<CatalogEntry>)],
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(u64, u64, u64, Vec<CompletedPart>), JobError> {
    let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>(4);
    let (part_tx, part_rx) = mpsc::channel::<Vec<u8>>(2);
    let writer = tokio::task::spawn_blocking(move || write_zip(cmd_rx, part_tx));
    let uploader = tokio::spawn(upload_parts(
        ctx.s3.clone(),
        bucket.to_string(),
        key.to_string(),
        upload_id.to_string(),
        part_rx,
    ));
    let fed = feed(ctx, job, repo, index, selected, &cmd_tx).await;
    drop(cmd_tx);
    let written = writer.await.map_err(|e| JobError::Upload(e.to_string()))?;
    let parts = uploader.await.map_err(|e| JobError::Upload(e.to_string()))?;
    // The first error is the cause: a stopped upload shows as a stopped writer, and so on.
    let renamed = fed?;
    let parts = parts.map_err(JobError::Upload)?;
    let (size, entries) = written.map_err(JobError::Upload)?;
    Ok((size, entries, renamed, parts))
}

/// Reads every selected item and sends it to the zip thread; returns how many names were changed.
async fn feed(
    ctx: &Context,
    job: &Job,
    repo: &Repo,
    index: &crate::repo::ChunkIndex,
    selected: &[(Entity, Vec<CatalogEntry>)],
    cmds: &mpsc::Sender<Cmd>,
) -> Result<u64, JobError> {
    let stopped = || JobError::Upload("the zip writer stopped".into());
    let mut namer = Namer::default();
    namer.reserve("manifest.csv");
    let mut progress = Progress::default();
    let mut renamed = 0u64;
    let mut since_save = 0u64;
    for (entity, entries) in selected {
        let dir = entity_dir(entity);
        for entry in entries {
            let folder = folder_of(entry);
            let mut dirs: Vec<&str> = vec![dir.as_str()];
            dirs.extend(folder.split('/').filter(|s| !s.is_empty()));
            let subject = meta_text(entry, "subject");
            let stem = if subject.trim().is_empty() {
                "(no subject)"
            } else {
                subject
            };
            let (path, changed) = namer.path(&dirs, stem, ".eml");
            let original = if changed {
                format!("{dir}/{folder}/{subject}.eml")
            } else {
                String::new()
            };
            renamed += u64::from(changed);
            let line = |status: &str| {
                [
                    csv(&path),
                    csv(&original),
                    csv(entity.id.as_str()),
                    csv(&entry.item),
                    csv(folder),
                    entry.size.to_string(),
                    entry.sha256.clone(),
                    csv(meta_text(entry, "received")),
                    csv(meta_text(entry, "sent")),
                    csv(subject),
                    csv(status),
                ]
                .join(",")
                    + "\n"
            };
            let modified = DateTime::parse_from_rfc3339(meta_text(entry, "received"))
                .ok()
                .and_then(|t| zip_time(t.with_timezone(&Utc)));
            let start = Cmd::Start {
                name: path.clone(),
                large: entry.size >= LARGE_ENTRY,
                modified,
            };
            if entry.size <= BUFFERED_ITEM_BYTES {
                match repo.read(entry, index).await {
                    Ok(bytes) => {
                        cmds.send(start).await.map_err(|_| stopped())?;
                        cmds.send(Cmd::Data(bytes)).await.map_err(|_| stopped())?;
                        cmds.send(Cmd::End(line("ok"))).await.map_err(|_| stopped())?;
                        progress.done += 1;
                        progress.bytes += entry.size;
                    }
                    Err(e) if e.is_retryable() => return Err(e.into()),
                    Err(e) => {
                        cmds.send(Cmd::Note(line(&format!("failed: {e}"))))
                            .await
                            .map_err(|_| stopped())?;
                        progress.fail(entity, entry, e);
                    }
                }
            } else {
                cmds.send(start).await.map_err(|_| stopped())?;
                let mut reader = repo.reader(entry, index);
                let sent = loop {
                    match reader.next_chunk().await {
                        Ok(Some(chunk)) => cmds.send(Cmd::Data(chunk)).await.map_err(|_| stopped())?,
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                };
                match sent {
                    Ok(()) => {
                        cmds.send(Cmd::End(line("ok"))).await.map_err(|_| stopped())?;
                        progress.done += 1;
                        progress.bytes += entry.size;
                    }
                    Err(e) if e.is_retryable() => return Err(e.into()),
                    Err(e) => {
                        // The entry is in the zip but incomplete: the manifest says so.
                        let status = format!("failed: incomplete in this zip: {e}");
                        cmds.send(Cmd::End(line(&status))).await.map_err(|_| stopped())?;
                        progress.fail(entity, entry, e);
                    }
                }
            }
            since_save += 1;
            if since_save >= PROGRESS_EVERY {
                since_save = 0;
                jobs::save_progress(ctx, job, &mut progress, None, None).await?;
            }
        }
    }
    cmds.send(Cmd::Finish).await.map_err(|_| stopped())?;
    jobs::save_progress(ctx, job, &mut progress, None, None).await?;
    Ok(renamed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses() {
        assert_eq!(csv("plain"), "plain");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
        assert_eq!(csv("=HYPERLINK(1)"), "'=HYPERLINK(1)");
    }

    #[test]
    fn the_email_carries_the_link_in_both_forms() {
        let now = Utc::now();
        let job = Job {
            id: crate::model::JobId("job_1".into()),
            account_id: crate::model::AccountId("acct_1".into()),
            kind: crate::model::JobKind::Export,
            status: JobStatus::Done,
            created_by: crate::model::AdminId("adm_1".into()),
            created_at: now,
            updated_at: now,
            selections: vec![],
            target_entity_id: None,
            folder_name: None,
            link_expiry_secs: 3600,
            notify: vec!["it@contoso.test".into()],
            total: 12,
            done: 11,
            failed: 1,
            bytes: 0,
            failures: vec![],
            error: None,
            result: None,
            outcome: None,
            invocations: 1,
            lease_until: None,
        };
        let link = download_link("https://api.example", &job, "tok&en");
        assert_eq!(link, "https://api.example/v1/downloads/acct_1/job_1?token=tok&en");
        let email = export_email(&job, &link, now);
        assert_eq!(email.to, vec!["it@contoso.test".to_string()]);
        assert!(email.subject.contains("11 items"));
        assert!(email.text.contains(&link) && email.text.contains("1 failed"));
        assert!(email.html.contains("token=tok&amp;en"));
    }

    /// The zip thread alone: many entries (past 65,535: ZIP64 end records) into parts.
    #[tokio::test(flavor = "multi_thread")]
    async fn zip_thread_writes_a_readable_archive_past_65535_entries() {
        let (cmd_tx, cmd_rx) = mpsc::channel::<Cmd>(8);
        let (part_tx, mut part_rx) = mpsc::channel::<Vec<u8>>(2);
        let writer = tokio::task::spawn_blocking(move || write_zip(cmd_rx, part_tx));
        let collector = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(p) = part_rx.recv().await {
                all.extend(p);
            }
            all
        });
        for i in 0..70_000u32 {
            cmd_tx
                .send(Cmd::Start {
                    name: format!("d/{i}.eml"),
                    large: false,
                    modified: None,
                })
                .await
                .unwrap();
            cmd_tx
                .send(Cmd::Data(format!("message {i}").into_bytes()))
                .await
                .unwrap();
            cmd_tx.send(Cmd::End(format!("d/{i}.eml\n"))).await.unwrap();
        }
        cmd_tx.send(Cmd::Finish).await.unwrap();
        let (size, entries) = writer.await.unwrap().unwrap();
        let bytes = collector.await.unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(entries, 70_001);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        assert_eq!(archive.len(), 70_001);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut archive.by_name("d/69999.eml").unwrap(), &mut text).unwrap();
        assert_eq!(text, "message 69999");
    }
}
