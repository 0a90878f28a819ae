//! Restore (issue 4): chosen items, folders or a whole mailbox, as of a
//! snapshot, back into the same mailbox or another of the same connection,
//! never touching what is there: everything goes into a new folder
//! (`Restored <date time>` unless the job names it) that keeps the original
//! folder tree beneath it.
//!
//! Messages come back as real messages, not drafts: they are created from
//! JSON with the extended properties that set the message flags (read, and
//! not unsent), the delivery time and the submit time (saas-apis.md §A4), then
//! their attachments are added (over 3 MB through an upload session). Each
//! restored item is recorded on the job before the next begins, so a
//! redelivered or retried job restores nothing twice. A job spans several
//! invocations when large and pauses while the mailbox is throttled.

use crate::context::Context;
use crate::model::{EntityKind, Job, JobStatus};
use crate::ops::backup::Budget;
use crate::ops::connections::graph_client;
use crate::ops::jobs::{self, JobError, JobMessage, Progress, folder_of};
use crate::repo::{CatalogEntry, Repo};
use crate::source::SourceError;
use crate::source::graph::{GraphClient, RetryPolicy};
use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tracing::info;

/// Attachments up to this size are sent inline; larger ones through an upload session.
pub const INLINE_ATTACHMENT_BYTES: usize = 3 * 1024 * 1024;
/// Upload-session chunk: a multiple of 320 KiB, under Outlook's 4 MiB.
pub const UPLOAD_CHUNK_BYTES: usize = 12 * 327_680;
/// Save progress every this many items.
const PROGRESS_EVERY: u64 = 50;
/// How long a throttled restore waits when no `Retry-After` was given.
const THROTTLED_PAUSE: Duration = Duration::from_secs(60);
/// The named property that marks what Strata restored (job and item), for audits.
const RESTORE_MARK: &str = "String {4c2f7d3e-8a61-4f0b-9b5e-2d7a3c1e6f90} Name StrataRestore";

/// The default name of the folder a restore creates.
pub fn default_folder_name(at: chrono::DateTime<chrono::Utc>) -> String {
    format!("Restored {}", at.format("%Y-%m-%d %H:%M"))
}

/// The key a restored item is recorded under (Graph ids are long; DynamoDB keys are not).
pub fn item_key(item: &str) -> String {
    hex::encode(&blake3::hash(item.as_bytes()).as_bytes()[..16])
}

/// Restores what a job asks (claimed by [`jobs::run`]), until done or out of time.
pub async fn run(ctx: &Context, job: &Job, budget: &Budget) -> Result<(), JobError> {
    let [selection] = job.selections.as_slice() else {
        return Err(JobError::Invalid("a restore takes exactly one selection".into()));
    };
    let repo = Repo::open(ctx.repo_store.clone(), ctx.repo_keys.as_ref(), job.account_id.as_str()).await?;
    let (source, entries) = jobs::resolve(ctx, &repo, &job.account_id, selection).await?;
    let target_id = job.target_entity_id.clone().unwrap_or_else(|| source.id.clone());
    let target = ctx
        .state
        .entity(&job.account_id, &target_id)
        .await?
        .ok_or_else(|| JobError::Invalid(format!("target {target_id} not found")))?;
    if target.kind != EntityKind::Mailbox || source.kind != EntityKind::Mailbox {
        return Err(JobError::Invalid("only mailboxes can be restored so far".into()));
    }
    if target.connection_id != source.connection_id {
        return Err(JobError::Invalid(
            "the target must belong to the same connection as the source".into(),
        ));
    }
    let connection = ctx
        .state
        .connection(&job.account_id, &target.connection_id)
        .await?
        .ok_or_else(|| JobError::Invalid("the connection is gone".into()))?;
    let client = graph_client(
        &ctx.http,
        ctx.sealer.as_ref(),
        &connection,
        RetryPolicy {
            // A long wait ends the invocation: the continuation comes back after it.
            max_retry_after: Duration::from_secs(30),
            ..RetryPolicy::default()
        },
    )
    .await?;
    let recorded = ctx.state.job_items(&job.account_id, &job.id).await?;
    let needed: std::collections::HashSet<crate::repo::ChunkId> =
        entries.iter().flat_map(|e| e.chunks.iter().copied()).collect();
    let index = repo.load_index_for(&needed).await?;
    drop(needed);
    let mut progress = Progress {
        total: Some(entries.len() as u64),
        ..Progress::default()
    };
    let root_name = job
        .folder_name
        .clone()
        .unwrap_or_else(|| default_folder_name(job.created_at));
    let mut folders = Folders::new(&client, &target.source_id, &root_name);
    let mut since_save = 0u64;
    for entry in &entries {
        let key = item_key(&entry.item);
        if recorded.contains_key(&key) {
            continue;
        }
        if budget.exhausted() {
            return pause(ctx, job, &mut progress, None).await;
        }
        let outcome = restore_item(
            ctx,
            job,
            &repo,
            &index,
            &client,
            &mut folders,
            &target.source_id,
            entry,
            &key,
        )
        .await;
        match outcome {
            Ok(restored) => {
                progress.done += 1;
                progress.bytes += entry.size;
                if let Some(note) = restored.incomplete {
                    progress.fail(&source, entry, note);
                }
            }
            Err(ItemError::Throttled(retry_after)) => {
                return pause(ctx, job, &mut progress, Some(retry_after.unwrap_or(THROTTLED_PAUSE))).await;
            }
            Err(ItemError::Fatal(e)) => return Err(e),
            Err(ItemError::Item(reason)) => {
                // Recorded too: a continuation goes on past it, and the job's counts add up
                // (done + failed = total). The failures list names it for a new restore.
                ctx.state
                    .record_job_item(
                        &job.account_id,
                        &job.id,
                        &key,
                        &json!({"item": entry.item, "failed": reason}),
                    )
                    .await?;
                progress.fail(&source, entry, reason);
            }
        }
        since_save += 1;
        if since_save >= PROGRESS_EVERY {
            since_save = 0;
            jobs::save_progress(ctx, job, &mut progress, None, None).await?;
        }
    }
    let job = jobs::save_progress(ctx, job, &mut progress, Some((JobStatus::Done, None)), None).await?;
    info!(job = %job.id, done = job.done, failed = job.failed, invocations = job.invocations, "restore done");
    Ok(())
}

/// Saves progress and queues the job's continuation (after `delay`).
async fn pause(ctx: &Context, job: &Job, progress: &mut Progress, delay: Option<Duration>) -> Result<(), JobError> {
    jobs::save_progress(ctx, job, progress, None, None).await?;
    let queue = ctx
        .restore_queue
        .as_ref()
        .ok_or_else(|| JobError::Continuation("no restore queue configured".into()))?;
    let body = serde_json::to_value(JobMessage {
        account_id: job.account_id.clone(),
        job_id: job.id.clone(),
    })
    .unwrap_or_default();
    jobs::release(ctx, job).await?;
    let sent = match delay {
        Some(d) => queue.send_delayed(&body, d).await,
        None => queue.send(&body).await,
    };
    sent.map_err(|e| JobError::Continuation(e.to_string()))?;
    info!(job = %job.id, delay_secs = delay.map(|d| d.as_secs()), "restore continues in a new invocation");
    Ok(())
}

enum ItemError {
    /// The mailbox asks to wait: the job pauses.
    Throttled(Option<Duration>),
    /// This item failed; the job goes on.
    Item(String),
    /// The job cannot go on (e.g. the repository is unreachable).
    Fatal(JobError),
}

impl From<SourceError> for ItemError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Throttled { retry_after, .. } => Self::Throttled(retry_after),
            e @ SourceError::Auth { .. } => Self::Fatal(JobError::Source(e)),
            e => Self::Item(e.to_string()),
        }
    }
}

struct Restored {
    /// Set when the message was created but part of it could not be added.
    incomplete: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn restore_item(
    ctx: &Context,
    job: &Job,
    repo: &Repo,
    index: &crate::repo::ChunkIndex,
    client: &GraphClient,
    folders: &mut Folders<'_>,
    user: &str,
    entry: &CatalogEntry,
    key: &str,
) -> Result<Restored, ItemError> {
    let mime = match repo.read(entry, index).await {
        Ok(m) => m,
        Err(e) if e.is_retryable() => return Err(ItemError::Fatal(e.into())),
        Err(e) => return Err(ItemError::Item(e.to_string())),
    };
    let folder_id = folders.ensure(folder_of(entry)).await?;
    let (body, attachments) = message_json(&mime, &entry.meta, &format!("{}/{key}", job.id));
    let user_path = urlencoding::encode(user).to_string();
    let created = client
        .post_json(
            &format!(
                "/users/{user_path}/mailFolders/{}/messages",
                urlencoding::encode(&folder_id)
            ),
            &body,
        )
        .await?;
    let message_id = created
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ItemError::Item("the created message has no id".into()))?
        .to_string();
    // Recorded at once: whatever happens to its attachments, the message is not created twice.
    ctx.state
        .record_job_item(
            &job.account_id,
            &job.id,
            key,
            &json!({"item": entry.item, "restored_as": message_id}),
        )
        .await
        .map_err(|e| ItemError::Fatal(e.into()))?;
    let mut missing = Vec::new();
    for a in attachments {
        if let Err(e) = add_attachment(client, user, &message_id, &a).await {
            if let ItemError::Throttled(_) | ItemError::Fatal(_) = e {
                // The message exists; its remaining attachments are reported, not retried into a duplicate.
                missing.push(format!("{} (interrupted)", a.name));
                continue;
            }
            let ItemError::Item(reason) = e else { continue };
            missing.push(format!("{}: {reason}", a.name));
        }
    }
    Ok(Restored {
        incomplete: (!missing.is_empty()).then(|| format!("restored without attachments: {}", missing.join("; "))),
    })
}

/// An attachment taken from the backed-up MIME.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    pub is_inline: bool,
    pub content_id: Option<String>,
}

fn address_list(addr: Option<&mail_parser::Address<'_>>) -> Vec<Value> {
    addr.map(|a| {
        a.iter()
            .filter_map(|x| {
                let address = x.address()?;
                Some(json!({"emailAddress": {"name": x.name().unwrap_or(address), "address": address}}))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The JSON that creates the message (not a draft, with its dates and read
/// state) and its attachments, from the MIME and the catalog metadata.
pub fn message_json(mime: &[u8], meta: &Value, mark: &str) -> (Value, Vec<Attachment>) {
    let parsed = MessageParser::default().parse(mime);
    let text = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
    let is_read = meta.get("is_read").and_then(Value::as_bool).unwrap_or(true);
    let mut props = vec![json!({"id": "Integer 0x0E07", "value": if is_read { "1" } else { "0" }})];
    let received = text("received");
    let sent = text("sent").or_else(|| received.clone());
    if let Some(r) = &received {
        props.push(json!({"id": "SystemTime 0x0E06", "value": r}));
    }
    if let Some(s) = &sent {
        props.push(json!({"id": "SystemTime 0x0039", "value": s}));
    }
    props.push(json!({"id": RESTORE_MARK, "value": mark}));
    let mut body = json!({
        "subject": text("subject").or_else(|| parsed.as_ref().and_then(|m| m.subject().map(str::to_string))).unwrap_or_default(),
        "singleValueExtendedProperties": props,
    });
    if let Some(flag) = text("flag") {
        body["flag"] = json!({"flagStatus": flag});
    }
    let mut attachments = Vec::new();
    match &parsed {
        Some(m) => {
            // mail-parser renders a text-only message as HTML too: keep what the sender wrote.
            let has_html = m.html_bodies().any(|p| p.is_content_type("text", "html"));
            let (content_type, content) = match m.body_html(0).filter(|_| has_html) {
                Some(html) => ("html", html.to_string()),
                None => ("text", m.body_text(0).map(|t| t.to_string()).unwrap_or_default()),
            };
            body["body"] = json!({"contentType": content_type, "content": content});
            let from = address_list(m.from());
            if let Some(f) = from.first() {
                body["from"] = f.clone();
                body["sender"] = address_list(m.sender()).first().cloned().unwrap_or_else(|| f.clone());
            }
            for (field, list) in [
                ("toRecipients", address_list(m.to())),
                ("ccRecipients", address_list(m.cc())),
                ("bccRecipients", address_list(m.bcc())),
                ("replyTo", address_list(m.reply_to())),
            ] {
                if !list.is_empty() {
                    body[field] = Value::Array(list);
                }
            }
            if let Some(id) = m.message_id() {
                body["internetMessageId"] = json!(format!("<{id}>"));
            }
            for (i, part) in m.attachments().enumerate() {
                let content_type = part
                    .content_type()
                    .map(|c| match c.subtype() {
                        Some(sub) => format!("{}/{sub}", c.ctype()),
                        None => c.ctype().to_string(),
                    })
                    .unwrap_or_else(|| "application/octet-stream".into());
                let name = part.attachment_name().map(str::to_string).unwrap_or_else(|| {
                    if content_type == "message/rfc822" {
                        format!("attachment-{}.eml", i + 1)
                    } else {
                        format!("attachment-{}", i + 1)
                    }
                });
                attachments.push(Attachment {
                    name,
                    content_type,
                    bytes: part.contents().to_vec(),
                    is_inline: part.content_disposition().is_some_and(|d| d.is_inline()),
                    content_id: part.content_id().map(str::to_string),
                });
            }
        }
        None => {
            // Not MIME at all: the bytes come back as the body, nothing lost.
            body["body"] = json!({"contentType": "text", "content": String::from_utf8_lossy(mime)});
        }
    }
    (body, attachments)
}

async fn add_attachment(client: &GraphClient, user: &str, message_id: &str, a: &Attachment) -> Result<(), ItemError> {
    let base = format!(
        "/users/{}/messages/{}/attachments",
        urlencoding::encode(user),
        urlencoding::encode(message_id)
    );
    if a.bytes.len() <= INLINE_ATTACHMENT_BYTES {
        let mut body = json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": a.name,
            "contentType": a.content_type,
            "contentBytes": base64::engine::general_purpose::STANDARD.encode(&a.bytes),
            "isInline": a.is_inline,
        });
        if let Some(cid) = &a.content_id {
            body["contentId"] = json!(cid);
        }
        client.post_json(&base, &body).await?;
        return Ok(());
    }
    let mut item = json!({
        "attachmentType": "file",
        "name": a.name,
        "size": a.bytes.len(),
        "contentType": a.content_type,
        "isInline": a.is_inline,
    });
    if let Some(cid) = &a.content_id {
        item["contentId"] = json!(cid);
    }
    let session = client
        .post_json(&format!("{base}/createUploadSession"), &json!({"AttachmentItem": item}))
        .await?;
    let url = session
        .get("uploadUrl")
        .and_then(Value::as_str)
        .ok_or_else(|| ItemError::Item("upload session without uploadUrl".into()))?;
    let total = a.bytes.len();
    let mut start = 0;
    while start < total {
        let end = (start + UPLOAD_CHUNK_BYTES).min(total);
        let range = format!("bytes {start}-{}/{total}", end - 1);
        client
            .put_chunk(url, user, range, bytes::Bytes::copy_from_slice(&a.bytes[start..end]))
            .await?;
        start = end;
    }
    Ok(())
}

/// The restore's folder tree in the target mailbox: created on first use,
/// found again (409: it exists) when a continuation or retry asks for it.
struct Folders<'a> {
    client: &'a GraphClient,
    user: String,
    root_name: String,
    /// Path below the root ("" is the root) → folder id.
    ids: HashMap<String, String>,
}

impl<'a> Folders<'a> {
    fn new(client: &'a GraphClient, user: &str, root_name: &str) -> Self {
        Self {
            client,
            user: urlencoding::encode(user).to_string(),
            root_name: root_name.to_string(),
            ids: HashMap::new(),
        }
    }

    async fn ensure(&mut self, path: &str) -> Result<String, ItemError> {
        if let Some(id) = self.ids.get(path) {
            return Ok(id.clone());
        }
        let (parent_path, name) = match path.rsplit_once('/') {
            _ if path.is_empty() => (None, self.root_name.clone()),
            Some((parent, name)) => (Some(parent.to_string()), name.to_string()),
            None => (Some(String::new()), path.to_string()),
        };
        let collection = match &parent_path {
            None => format!("/users/{}/mailFolders", self.user),
            Some(p) => {
                let parent = Box::pin(self.ensure(p)).await?;
                format!(
                    "/users/{}/mailFolders/{}/childFolders",
                    self.user,
                    urlencoding::encode(&parent)
                )
            }
        };
        let name = if name.is_empty() { "(unnamed)".to_string() } else { name };
        let id = match self.client.post_json(&collection, &json!({"displayName": name})).await {
            Ok(v) => v.get("id").and_then(Value::as_str).map(str::to_string),
            Err(SourceError::Api { status: 409, .. }) => {
                let existing = self
                    .client
                    .get_all(&format!("{collection}?includeHiddenFolders=true&$top=100"))
                    .await?;
                existing
                    .iter()
                    .find(|f| {
                        f.get("displayName")
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(&name))
                    })
                    .and_then(|f| f.get("id").and_then(Value::as_str).map(str::to_string))
            }
            Err(e) => return Err(e.into()),
        }
        .ok_or_else(|| ItemError::Item(format!("folder {name} could not be created or found")))?;
        self.ids.insert(path.to_string(), id.clone());
        Ok(id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn message_json_is_not_a_draft_and_keeps_dates_read_state_and_attachments() {
        let mime = b"From: Alice <alice@contoso.com>\r\nTo: Bob <bob@contoso.com>, carol@contoso.com\r\nCc: dan@contoso.com\r\nSubject: Plans\r\nMessage-ID: <abc@contoso.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\nHello\r\n--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"plan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--XX--\r\n";
        let meta = json!({"subject": "Plans", "received": "2026-10-01T08:00:00Z", "sent": "2026-10-01T07:59:00Z", "is_read": false, "flag": "flagged"});
        let (body, attachments) = message_json(mime, &meta, "job/key");
        let props = body["singleValueExtendedProperties"].as_array().unwrap();
        assert!(props.contains(&json!({"id": "Integer 0x0E07", "value": "0"})));
        assert!(props.contains(&json!({"id": "SystemTime 0x0E06", "value": "2026-10-01T08:00:00Z"})));
        assert!(props.contains(&json!({"id": "SystemTime 0x0039", "value": "2026-10-01T07:59:00Z"})));
        assert_eq!(body["from"]["emailAddress"]["address"], "alice@contoso.com");
        assert_eq!(body["toRecipients"].as_array().unwrap().len(), 2);
        assert_eq!(body["ccRecipients"][0]["emailAddress"]["address"], "dan@contoso.com");
        assert_eq!(body["body"]["content"].as_str().unwrap().trim(), "Hello");
        assert_eq!(body["flag"]["flagStatus"], "flagged");
        assert_eq!(body["internetMessageId"], "<abc@contoso.com>");
        assert_eq!(attachments.len(), 1);
        assert_eq!(attachments[0].name, "plan.pdf");
        assert_eq!(attachments[0].content_type, "application/pdf");
        assert_eq!(attachments[0].bytes, b"%PDF-1.4");
    }

    #[test]
    fn bytes_that_are_not_mime_still_come_back() {
        let (body, attachments) = message_json(&[0xff, 0xfe, 0x00], &json!({}), "m");
        assert!(attachments.is_empty());
        assert!(body["body"]["content"].is_string());
    }
}
