//! Mailboxes of the fake: folders (nested, hidden ones too), messages as raw
//! MIME, and a change log that per-folder message delta queries replay
//! (saas-apis.md §A4): opaque next and delta links, `@removed` entries,
//! moves, read and flag changes, expired sync states.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Folder {
    pub id: String,
    pub parent_id: Option<String>,
    pub display_name: String,
    pub hidden: bool,
}

#[derive(Debug, Clone)]
pub struct MailItem {
    pub id: String,
    pub folder_id: String,
    /// The RFC 822 message `$value` returns (synthesized from [`MailItem::composed`]
    /// for a message created from JSON, and regenerated when an attachment is added).
    pub mime: bytes::Bytes,
    pub is_read: bool,
    pub flagged: bool,
    /// Created through Graph as a draft (MIME create, or JSON create without
    /// `PR_MESSAGE_FLAGS` cleared of MSGFLAG_UNSENT). Delivered messages: false.
    pub is_draft: bool,
    /// `receivedDateTime` when set (ISO 8601); otherwise the MIME `Date` header.
    pub received: Option<String>,
    /// `sentDateTime` when set (ISO 8601); otherwise the MIME `Date` header.
    pub sent: Option<String>,
    /// Attachments added through Graph (`/attachments`, upload sessions), in order.
    pub attachments: Vec<Attachment>,
    /// The fields of a message created from JSON (None: from MIME).
    pub composed: Option<Composed>,
    /// Sequence number of the last change.
    pub seq: u64,
    /// Sequence number of its arrival: the stable order of delta pages.
    pub created_seq: u64,
    pub change_key: u64,
}

/// A file attachment added through Graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub bytes: bytes::Bytes,
    pub is_inline: bool,
    pub content_id: Option<String>,
}

/// An `emailAddress` of a recipient.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Address {
    pub name: String,
    pub address: String,
}

/// The fields of a message created from JSON (`POST .../messages`, application/json).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Composed {
    pub subject: String,
    /// `body.contentType` is `html`.
    pub body_html: bool,
    pub body: String,
    pub from: Option<Address>,
    pub sender: Option<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    pub bcc: Vec<Address>,
    pub reply_to: Vec<Address>,
    /// As given, or generated (`<...@fake-m365>`).
    pub internet_message_id: String,
    /// `low`, `normal` or `high`.
    pub importance: String,
    pub categories: Vec<String>,
}

/// A message to store: everything but its id and sequence numbers.
#[derive(Debug, Clone, Default)]
pub struct NewItem {
    pub mime: bytes::Bytes,
    pub is_read: bool,
    pub flagged: bool,
    pub is_draft: bool,
    pub received: Option<String>,
    pub sent: Option<String>,
    pub composed: Option<Composed>,
}

/// Why a folder could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderError {
    EmptyName,
    ParentNotFound,
    Exists,
}

/// A message left a folder (deleted, or moved elsewhere) at `seq`.
#[derive(Debug, Clone)]
struct Removal {
    folder_id: String,
    id: String,
    seq: u64,
}

/// One user's mailbox.
#[derive(Debug, Clone, Default)]
pub struct Mailbox {
    pub folders: Vec<Folder>,
    pub items: Vec<MailItem>,
    removals: Vec<Removal>,
    seq: u64,
    next_id: u64,
    /// Sync states older than this sequence number are forgotten (`syncStateNotFound`).
    pub oldest_sync_state: u64,
    owner: String,
}

const WELL_KNOWN: &[(&str, bool)] = &[
    ("Inbox", false),
    ("Drafts", false),
    ("Sent Items", false),
    ("Deleted Items", false),
    ("Archive", false),
    ("Conversation History", true),
];

fn opaque(prefix: &str, owner: &str, n: u64) -> String {
    let raw = format!("{owner}:{n}");
    format!(
        "AAMk{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

impl Mailbox {
    pub fn new(owner: &str) -> Self {
        let mut m = Self {
            owner: owner.to_string(),
            ..Self::default()
        };
        for (name, hidden) in WELL_KNOWN {
            m.folder_path(name);
            if let Some(f) = m.folders.iter_mut().find(|f| *hidden && f.display_name == *name) {
                f.hidden = true;
            }
        }
        m
    }

    /// The latest change's sequence number.
    pub fn current_seq(&self) -> u64 {
        self.seq
    }

    fn bump(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The folder at a `/`-separated path, created with its parents when missing.
    pub fn folder_path(&mut self, path: &str) -> String {
        let mut parent: Option<String> = None;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            let existing = self
                .folders
                .iter()
                .find(|f| f.parent_id == parent && f.display_name == name)
                .map(|f| f.id.clone());
            let id = match existing {
                Some(id) => id,
                None => {
                    self.next_id += 1;
                    let id = opaque("F", &self.owner, self.next_id);
                    self.folders.push(Folder {
                        id: id.clone(),
                        parent_id: parent.clone(),
                        display_name: name.to_string(),
                        hidden: false,
                    });
                    id
                }
            };
            parent = Some(id);
        }
        parent.unwrap_or_default()
    }

    pub fn add(&mut self, folder_path: &str, mime: impl Into<bytes::Bytes>) -> String {
        let folder_id = self.folder_path(folder_path);
        let item = NewItem {
            mime: mime.into(),
            ..NewItem::default()
        };
        self.insert(&folder_id, item).id.clone()
    }

    /// Stores a message in the folder with this id (the caller checked it exists).
    pub fn insert(&mut self, folder_id: &str, new: NewItem) -> &MailItem {
        self.next_id += 1;
        let id = opaque("M", &self.owner, self.next_id);
        let seq = self.bump();
        self.items.push(MailItem {
            id,
            folder_id: folder_id.to_string(),
            mime: new.mime,
            is_read: new.is_read,
            flagged: new.flagged,
            is_draft: new.is_draft,
            received: new.received,
            sent: new.sent,
            attachments: Vec::new(),
            composed: new.composed,
            seq,
            created_seq: seq,
            change_key: seq,
        });
        &self.items[self.items.len() - 1]
    }

    /// Applies `change` to a message as one change (new `changeKey`, seen by delta).
    pub fn update<T>(&mut self, id: &str, change: impl FnOnce(&mut MailItem) -> T) -> Option<T> {
        let pos = self.items.iter().position(|m| m.id == id)?;
        let seq = self.bump();
        let item = &mut self.items[pos];
        let out = change(item);
        item.seq = seq;
        item.change_key = seq;
        Some(out)
    }

    /// A folder under `parent` (None: the top level), unless a sibling has the
    /// same name without regard to case.
    pub fn create_folder(&mut self, parent: Option<&str>, name: &str, hidden: bool) -> Result<Folder, FolderError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(FolderError::EmptyName);
        }
        if parent.is_some_and(|p| !self.folders.iter().any(|f| f.id == p)) {
            return Err(FolderError::ParentNotFound);
        }
        let taken = self
            .folders
            .iter()
            .any(|f| f.parent_id.as_deref() == parent && f.display_name.to_lowercase() == name.to_lowercase());
        if taken {
            return Err(FolderError::Exists);
        }
        self.next_id += 1;
        let folder = Folder {
            id: opaque("F", &self.owner, self.next_id),
            parent_id: parent.map(str::to_string),
            display_name: name.to_string(),
            hidden,
        };
        self.bump();
        self.folders.push(folder.clone());
        Ok(folder)
    }

    /// The `A/B/C` path of a folder.
    pub fn path_of(&self, folder_id: &str) -> Option<String> {
        let mut names = Vec::new();
        let mut current = Some(folder_id.to_string());
        while let Some(id) = current {
            let f = self.folders.iter().find(|f| f.id == id)?;
            names.push(f.display_name.clone());
            current = f.parent_id.clone();
            if names.len() > self.folders.len() {
                return None;
            }
        }
        names.reverse();
        Some(names.join("/"))
    }

    /// The messages of the folder at exactly this path, in arrival order.
    pub fn messages_in(&self, folder_path: &str) -> Vec<MailItem> {
        let Some(id) = self.find_folder(folder_path) else {
            return Vec::new();
        };
        let mut items: Vec<MailItem> = self.items.iter().filter(|m| m.folder_id == id).cloned().collect();
        items.sort_by_key(|m| m.created_seq);
        items
    }

    pub fn delete(&mut self, id: &str) -> bool {
        let Some(pos) = self.items.iter().position(|m| m.id == id) else {
            return false;
        };
        let item = self.items.remove(pos);
        let seq = self.bump();
        self.removals.push(Removal {
            folder_id: item.folder_id,
            id: item.id,
            seq,
        });
        true
    }

    /// Moves a message; its immutable id stays.
    pub fn move_to(&mut self, id: &str, folder_path: &str) -> bool {
        let target = self.folder_path(folder_path);
        let seq = self.bump();
        let Some(item) = self.items.iter_mut().find(|m| m.id == id) else {
            return false;
        };
        let from = std::mem::replace(&mut item.folder_id, target);
        item.seq = seq;
        item.change_key = seq;
        self.removals.push(Removal {
            folder_id: from,
            id: id.to_string(),
            seq,
        });
        true
    }

    pub fn set_read(&mut self, id: &str, read: bool) -> bool {
        self.update(id, |m| m.is_read = read).is_some()
    }

    /// Renames the folder at `path` (its id and its messages' stay).
    pub fn rename_folder(&mut self, path: &str, new_name: &str) -> bool {
        let Some(id) = self.find_folder(path) else {
            return false;
        };
        self.bump();
        match self.folders.iter_mut().find(|f| f.id == id) {
            Some(f) => {
                f.display_name = new_name.to_string();
                true
            }
            None => false,
        }
    }

    /// Deletes the folder at `path` for good, with its subfolders and their messages
    /// (as emptying it from Deleted Items does): it leaves the folder listing,
    /// and its delta links answer 404.
    pub fn delete_folder(&mut self, path: &str) -> bool {
        let Some(id) = self.find_folder(path) else {
            return false;
        };
        let mut doomed = vec![id];
        let mut i = 0;
        while i < doomed.len() {
            let parent = doomed[i].clone();
            doomed.extend(
                self.folders
                    .iter()
                    .filter(|f| f.parent_id.as_deref() == Some(parent.as_str()))
                    .map(|f| f.id.clone()),
            );
            i += 1;
        }
        self.bump();
        self.folders.retain(|f| !doomed.contains(&f.id));
        self.items.retain(|m| !doomed.contains(&m.folder_id));
        true
    }

    fn find_folder(&self, path: &str) -> Option<String> {
        let mut parent: Option<String> = None;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            parent = Some(
                self.folders
                    .iter()
                    .find(|f| f.parent_id == parent && f.display_name == name)?
                    .id
                    .clone(),
            );
        }
        parent
    }

    /// Forgets every sync state issued so far: their next delta answers `syncStateNotFound`.
    pub fn expire_sync_states(&mut self) {
        self.oldest_sync_state = self.bump();
    }

    pub fn folder_json(&self, f: &Folder) -> Value {
        let children = self
            .folders
            .iter()
            .filter(|c| c.parent_id.as_deref() == Some(f.id.as_str()))
            .count();
        let total = self.items.iter().filter(|m| m.folder_id == f.id).count();
        let unread = self.items.iter().filter(|m| m.folder_id == f.id && !m.is_read).count();
        json!({"id": f.id, "displayName": f.display_name, "parentFolderId": f.parent_id.clone().unwrap_or_else(|| opaque("R", &self.owner, 0)),
               "childFolderCount": children, "unreadItemCount": unread, "totalItemCount": total, "isHidden": f.hidden})
    }
}

/// The sync state inside next and delta links.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct SyncState {
    /// Changes after this sequence number are reported.
    pub since: u64,
    /// The round's view: changes up to this sequence number.
    pub upto: u64,
    /// Items phase: the last arrival returned (stable under concurrent changes).
    pub after_created: u64,
    /// Removals phase: the last removal returned.
    pub after_removal: u64,
    pub page: usize,
}

impl SyncState {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
    pub fn decode(token: &str) -> Option<Self> {
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?).ok()
    }
}

/// Minimal RFC 5322 header reading: unfolded values of the first header block.
pub fn headers(mime: &[u8]) -> HashMap<String, String> {
    // The header block is at the start; a large message's body is never read.
    let text = String::from_utf8_lossy(&mime[..mime.len().min(64 * 1024)]);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .to_string();
    let mut out: HashMap<String, String> = HashMap::new();
    let mut current: Option<String> = None;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(v) = current.as_ref().and_then(|k| out.get_mut(k)) {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            let key = k.trim().to_ascii_lowercase();
            out.entry(key.clone()).or_insert_with(|| v.trim().to_string());
            current = Some(key);
        }
    }
    // Graph shows the subject decoded (RFC 2047 encoded words).
    if out.get("subject").is_some_and(|s| s.contains("=?"))
        && let Some(subject) = mail_parser::MessageParser::default()
            .parse_headers(format!("{head}\r\n\r\n").as_bytes())
            .and_then(|m| m.subject().map(str::to_string))
    {
        out.insert("subject".into(), subject);
    }
    out
}

fn address(v: &str) -> Value {
    let v = v.trim();
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => {
            json!({"emailAddress": {"name": v[..a].trim().trim_matches('"'), "address": &v[a + 1..b]}})
        }
        _ => json!({"emailAddress": {"name": v, "address": v}}),
    }
}

fn address_json(a: &Address) -> Value {
    json!({"emailAddress": {"name": a.name, "address": a.address}})
}

fn iso(d: chrono::DateTime<chrono::FixedOffset>) -> String {
    d.with_timezone(&chrono::Utc).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A message resource as delta and GET return it.
pub fn message_json(m: &MailItem) -> Value {
    let h = headers(&m.mime);
    let date = h
        .get("date")
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
        .map(iso)
        .unwrap_or_else(|| "2026-01-01T00:00:00Z".into());
    let list = |name: &str| -> Vec<Value> {
        h.get(name)
            .map(|t| t.split(',').filter(|a| !a.trim().is_empty()).map(address).collect())
            .unwrap_or_default()
    };
    let mime_attachments = h
        .get("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().contains("multipart/mixed"));
    let mut v = json!({
        "@odata.type": "#microsoft.graph.message",
        "id": m.id,
        "changeKey": format!("CQAAAB{}", m.change_key),
        "parentFolderId": m.folder_id,
        "subject": h.get("subject").cloned().unwrap_or_default(),
        "from": h.get("from").map(|f| address(f)).unwrap_or(Value::Null),
        "toRecipients": list("to"),
        "ccRecipients": list("cc"),
        "receivedDateTime": m.received.clone().unwrap_or_else(|| date.clone()),
        "sentDateTime": m.sent.clone().unwrap_or(date),
        "internetMessageId": h.get("message-id").cloned(),
        "hasAttachments": !m.attachments.is_empty() || mime_attachments,
        "isRead": m.is_read,
        "isDraft": m.is_draft,
        "flag": {"flagStatus": if m.flagged { "flagged" } else { "notFlagged" }},
    });
    if let Some(c) = &m.composed {
        v["subject"] = json!(c.subject);
        v["from"] = c.from.as_ref().map(address_json).unwrap_or(Value::Null);
        v["sender"] = c
            .sender
            .as_ref()
            .or(c.from.as_ref())
            .map(address_json)
            .unwrap_or(Value::Null);
        v["toRecipients"] = json!(c.to.iter().map(address_json).collect::<Vec<_>>());
        v["ccRecipients"] = json!(c.cc.iter().map(address_json).collect::<Vec<_>>());
        v["bccRecipients"] = json!(c.bcc.iter().map(address_json).collect::<Vec<_>>());
        v["replyTo"] = json!(c.reply_to.iter().map(address_json).collect::<Vec<_>>());
        v["internetMessageId"] = json!(c.internet_message_id);
        v["importance"] = json!(c.importance);
        v["categories"] = json!(c.categories);
        v["body"] = json!({"contentType": if c.body_html { "html" } else { "text" }, "content": c.body});
    }
    v
}

/// An attachment's id: stable, as attachments are only ever appended.
pub fn attachment_id(message_id: &str, index: usize) -> String {
    format!(
        "{message_id}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("attachment:{index}"))
    )
}

/// An attachment resource; `contentBytes` only when `with_content`.
pub fn attachment_json(message_id: &str, index: usize, a: &Attachment, with_content: bool) -> Value {
    let mut v = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": attachment_id(message_id, index),
        "name": a.name,
        "contentType": a.content_type,
        "size": a.bytes.len(),
        "isInline": a.is_inline,
        "contentId": a.content_id,
        "lastModifiedDateTime": "2026-01-01T00:00:00Z",
    });
    if with_content {
        v["contentBytes"] = json!(base64::engine::general_purpose::STANDARD.encode(&a.bytes));
    }
    v
}

/// One page of a folder's message delta: the next state, or `None` when the round is over.
/// Present messages come first in arrival order, then removals; a message
/// changed during the round may be returned again next round (Graph replays too).
pub fn delta_page(mailbox: &Mailbox, folder_id: &str, state: &SyncState) -> (Vec<Value>, Option<SyncState>) {
    let mut present: Vec<&MailItem> = mailbox
        .items
        .iter()
        .filter(|m| m.folder_id == folder_id && m.created_seq <= state.upto && m.created_seq > state.after_created)
        .filter(|m| m.seq > state.since)
        .collect();
    present.sort_by_key(|m| m.created_seq);
    let mut values: Vec<Value> = Vec::new();
    let mut next = *state;
    for m in present.iter().take(state.page) {
        values.push(message_json(m));
        next.after_created = m.created_seq;
    }
    if present.len() > state.page {
        return (values, Some(next));
    }
    // Items are done: removals of the round follow.
    next.after_created = u64::MAX;
    if state.since > 0 {
        let mut removals: Vec<&Removal> = mailbox
            .removals
            .iter()
            .filter(|r| {
                r.folder_id == folder_id && r.seq > state.since && r.seq <= state.upto && r.seq > state.after_removal
            })
            .filter(|r| !mailbox.items.iter().any(|m| m.id == r.id && m.folder_id == folder_id))
            .collect();
        removals.sort_by_key(|r| r.seq);
        let room = state.page - values.len();
        for r in removals.iter().take(room) {
            values.push(
                json!({"@odata.type": "#microsoft.graph.message", "id": r.id, "@removed": {"reason": "deleted"}}),
            );
            next.after_removal = r.seq;
        }
        if removals.len() > room {
            return (values, Some(next));
        }
    }
    (values, None)
}
