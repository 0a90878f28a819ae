//! Mail over Graph (saas-apis.md §A4): the folder tree (hidden folders too),
//! per-folder message delta with immutable ids, and MIME from `$value`.

use super::client::{ContentStream, GraphClient};
use crate::source::SourceError;
use serde_json::Value;

/// Messages per delta page.
pub const DELTA_PAGE_SIZE: usize = 100;

/// A mail folder with its path from the root (`Inbox/Projects`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFolder {
    pub id: String,
    pub path: String,
    pub hidden: bool,
}

/// One change of a delta page.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageChange {
    /// A message that is (now) in the folder, with its metadata.
    Present { id: String, meta: Value, is_draft: bool },
    /// A message that left the folder (deleted or moved away).
    Removed { id: String },
}

/// A page of a folder's delta and where to go next.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaPage {
    pub changes: Vec<MessageChange>,
    /// `@odata.nextLink`: more of this round.
    pub next_link: Option<String>,
    /// `@odata.deltaLink`: the round is over; start the next round here.
    pub delta_link: Option<String>,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

impl GraphClient {
    /// Every folder of a mailbox, hidden ones included, depth first.
    pub async fn mail_folders(&self, user: &str) -> Result<Vec<MailFolder>, SourceError> {
        let user = urlencoding::encode(user).to_string();
        let mut out = Vec::new();
        let mut pending: Vec<(String, String)> = Vec::new();
        let top = self
            .get_all(&format!("/users/{user}/mailFolders?includeHiddenFolders=true&$top=100"))
            .await?;
        for f in top.iter().rev() {
            pending.push((String::new(), serde_json::to_string(f).unwrap_or_default()));
        }
        while let Some((parent_path, json)) = pending.pop() {
            let f: Value = serde_json::from_str(&json).map_err(|e| SourceError::Protocol(e.to_string()))?;
            let id = text(&f, "id").ok_or_else(|| SourceError::Protocol("folder without id".into()))?;
            let name = text(&f, "displayName").unwrap_or_default();
            let path = if parent_path.is_empty() {
                name
            } else {
                format!("{parent_path}/{name}")
            };
            let children = f.get("childFolderCount").and_then(Value::as_u64).unwrap_or(0);
            out.push(MailFolder {
                id: id.clone(),
                path: path.clone(),
                hidden: f.get("isHidden").and_then(Value::as_bool).unwrap_or(false),
            });
            if children > 0 {
                let kids = self
                    .get_all(&format!(
                        "/users/{user}/mailFolders/{}/childFolders?includeHiddenFolders=true&$top=100",
                        urlencoding::encode(&id)
                    ))
                    .await?;
                for k in kids.iter().rev() {
                    pending.push((path.clone(), serde_json::to_string(k).unwrap_or_default()));
                }
            }
        }
        Ok(out)
    }

    /// The first delta link of a folder (a full enumeration).
    pub fn delta_start(user: &str, folder_id: &str) -> String {
        format!(
            "/users/{}/mailFolders/{}/messages/delta",
            urlencoding::encode(user),
            urlencoding::encode(folder_id)
        )
    }

    /// One page of a folder's message delta, from a start path, a next link or a delta link.
    pub async fn message_delta(&self, link: &str) -> Result<DeltaPage, SourceError> {
        let page = self
            .get_json_prefer(link, &format!("odata.maxpagesize={DELTA_PAGE_SIZE}"))
            .await?;
        let values = page
            .get("value")
            .and_then(Value::as_array)
            .ok_or_else(|| SourceError::Protocol("delta page without value".into()))?;
        let mut changes = Vec::with_capacity(values.len());
        for v in values {
            let id = text(v, "id").ok_or_else(|| SourceError::Protocol("message without id".into()))?;
            if v.get("@removed").is_some() {
                changes.push(MessageChange::Removed { id });
                continue;
            }
            let is_draft = v.get("isDraft").and_then(Value::as_bool).unwrap_or(false);
            let meta = serde_json::json!({
                "subject": v.get("subject"),
                "from": v.pointer("/from/emailAddress/address"),
                "to": v.get("toRecipients").and_then(Value::as_array).map(|r| r.iter().filter_map(|x| x.pointer("/emailAddress/address").cloned()).collect::<Vec<_>>()),
                "received": v.get("receivedDateTime"),
                "sent": v.get("sentDateTime"),
                "is_read": v.get("isRead"),
                "flag": v.pointer("/flag/flagStatus"),
                "has_attachments": v.get("hasAttachments"),
                "internet_message_id": v.get("internetMessageId"),
                "folder_id": v.get("parentFolderId"),
            });
            changes.push(MessageChange::Present { id, meta, is_draft });
        }
        Ok(DeltaPage {
            changes,
            next_link: text(&page, "@odata.nextLink"),
            delta_link: text(&page, "@odata.deltaLink"),
        })
    }

    /// The raw RFC 822 message, read as it arrives (never held whole).
    pub async fn message_mime(&self, user: &str, message_id: &str) -> Result<ContentStream, SourceError> {
        self.get_stream(&format!(
            "/users/{}/messages/{}/$value",
            urlencoding::encode(user),
            urlencoding::encode(message_id)
        ))
        .await
    }
}
