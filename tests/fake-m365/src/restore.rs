//! The write side of Graph mail a restore needs (saas-apis.md §A4 "Restore",
//! "Create a folder"): folders, messages from MIME or JSON, attachments,
//! attachment upload sessions, and PATCH of the read and flag state.

use crate::compose;
use crate::graph::{item_not_found, method_not_allowed, no_mailbox, user_not_found};
use crate::mail::{self, Attachment, FolderError, Mailbox, NewItem};
use crate::server::{Inner, Outcome, Shared, graph_error};
use crate::upload;
use axum::http::{HeaderMap, Method, StatusCode, header};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

/// Above this, an attachment needs an upload session (§A4).
pub const MAX_ATTACHMENT_BYTES: usize = 3 * 1024 * 1024;

/// A write the fake knows.
enum Write<'a> {
    CreateFolder { parent: Option<&'a str> },
    CreateMessage { folder: &'a str },
    AddAttachment { message: &'a str },
    CreateUploadSession { message: &'a str },
    PatchMessage { message: &'a str },
}

fn route<'a>(method: &Method, rest: &[&'a str]) -> Option<Write<'a>> {
    let write = match (method.as_str(), rest) {
        ("POST", ["mailFolders"]) => Write::CreateFolder { parent: None },
        ("POST", ["mailFolders", fid, "childFolders"]) => Write::CreateFolder { parent: Some(fid) },
        ("POST", ["mailFolders", fid, "messages"]) => Write::CreateMessage { folder: fid },
        ("POST", ["messages", mid, "attachments"]) => Write::AddAttachment { message: mid },
        ("POST", ["messages", mid, "attachments", "createUploadSession"]) => {
            Write::CreateUploadSession { message: mid }
        }
        ("PATCH", ["messages", mid]) => Write::PatchMessage { message: mid },
        _ => return None,
    };
    Some(write)
}

fn bad_request(code: &str, message: &str) -> Outcome {
    graph_error(StatusCode::BAD_REQUEST, code, message)
}

fn created(body: Value) -> Outcome {
    Outcome::json(StatusCode::CREATED, body)
}

/// Handles a POST or PATCH under `/v1.0/users/{id}/`; `app` is the caller's client id.
pub(crate) fn serve(
    shared: &Shared,
    app: &str,
    method: &Method,
    segments: &[&str],
    headers: &HeaderMap,
    body: &[u8],
) -> Outcome {
    let ["v1.0", "users", user, rest @ ..] = segments else {
        return method_not_allowed(method);
    };
    let Some(write) = route(method, rest) else {
        return method_not_allowed(method);
    };
    let mut inner = shared.lock();
    let Some(owner) = inner.find_user(user).map(|u| u.id.clone()) else {
        return user_not_found(user);
    };
    let Inner { mailboxes, uploads, .. } = &mut *inner;
    let Some(mailbox) = mailboxes.get_mut(&owner) else {
        return no_mailbox();
    };
    match write {
        Write::CreateFolder { parent } => create_folder(mailbox, parent, body),
        Write::CreateMessage { folder } => create_message(mailbox, folder, headers, body),
        Write::AddAttachment { message } => add_attachment(mailbox, message, body),
        Write::CreateUploadSession { message } => {
            if !mailbox.items.iter().any(|m| m.id == message) {
                return item_not_found();
            }
            let target = upload::Target {
                app: app.to_string(),
                owner,
                message_id: message.to_string(),
            };
            upload::create(uploads, &shared.base_url, target, body)
        }
        Write::PatchMessage { message } => patch_message(mailbox, message, body),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewFolder {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    is_hidden: Option<bool>,
}

fn create_folder(mailbox: &mut Mailbox, parent: Option<&str>, body: &[u8]) -> Outcome {
    let new: NewFolder = match serde_json::from_slice(body) {
        Ok(f) => f,
        Err(e) => return bad_request("RequestBodyRead", &format!("Invalid JSON: {e}")),
    };
    let name = new.display_name.unwrap_or_default();
    match mailbox.create_folder(parent, &name, new.is_hidden.unwrap_or(false)) {
        Ok(folder) => created(mailbox.folder_json(&folder)),
        Err(FolderError::EmptyName) => bad_request("ErrorInvalidRequest", "The folder display name must not be empty."),
        Err(FolderError::ParentNotFound) => item_not_found(),
        Err(FolderError::Exists) => graph_error(
            StatusCode::CONFLICT,
            "ErrorFolderExists",
            "A folder with the specified name already exists.",
        ),
    }
}

/// The media type of the request, lower case, without parameters.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn create_message(mailbox: &mut Mailbox, folder: &str, headers: &HeaderMap, body: &[u8]) -> Outcome {
    if !mailbox.folders.iter().any(|f| f.id == folder) {
        return item_not_found();
    }
    let new = match media_type(headers).as_str() {
        "text/plain" => match from_mime(body) {
            Ok(n) => n,
            Err(e) => return e,
        },
        "application/json" | "" => match compose::from_json(body, chrono::Utc::now()) {
            Ok(n) => n,
            Err(e) => return bad_request("RequestBodyRead", &e),
        },
        other => {
            return graph_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "ErrorInvalidRequest",
                &format!("Content-Type '{other}' is not supported: use application/json or text/plain (base64 MIME)."),
            );
        }
    };
    created(mail::message_json(mailbox.insert(folder, new)))
}

/// A message from base64 MIME: always a draft (§A4 "Create from MIME").
fn from_mime(body: &[u8]) -> Result<NewItem, Outcome> {
    let compact: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    let mime = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|_| {
            bad_request(
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content",
            )
        })?;
    if mime.is_empty() || mail::headers(&mime).is_empty() {
        return Err(bad_request(
            "ErrorMimeContentInvalid",
            "MIME content does not contain all required information or is malformed.",
        ));
    }
    Ok(NewItem {
        mime: mime.into(),
        is_draft: true,
        ..NewItem::default()
    })
}

#[derive(Deserialize)]
struct NewAttachment {
    #[serde(rename = "@odata.type", default)]
    odata_type: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "contentType", default)]
    content_type: Option<String>,
    #[serde(rename = "contentBytes", default)]
    content_bytes: Option<String>,
    #[serde(rename = "isInline", default)]
    is_inline: Option<bool>,
    #[serde(rename = "contentId", default)]
    content_id: Option<String>,
}

fn add_attachment(mailbox: &mut Mailbox, message: &str, body: &[u8]) -> Outcome {
    if !mailbox.items.iter().any(|m| m.id == message) {
        return item_not_found();
    }
    let new: NewAttachment = match serde_json::from_slice(body) {
        Ok(a) => a,
        Err(e) => return bad_request("RequestBodyRead", &format!("Invalid JSON: {e}")),
    };
    let kind = new.odata_type.as_deref().unwrap_or("#microsoft.graph.fileAttachment");
    if !kind.eq_ignore_ascii_case("#microsoft.graph.fileAttachment") {
        return bad_request(
            "ErrorInvalidRequest",
            &format!("The fake supports only file attachments, not '{kind}'."),
        );
    }
    let Some(bytes) = new
        .content_bytes
        .as_deref()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
    else {
        return bad_request("ErrorInvalidRequest", "contentBytes must be a base64 string.");
    };
    if bytes.len() > MAX_ATTACHMENT_BYTES {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ErrorRequestEntityTooLarge",
            "The attachment is over 3 MB: use an upload session.",
        );
    }
    let attachment = Attachment {
        name: new.name.unwrap_or_default(),
        content_type: new.content_type.unwrap_or_else(|| "application/octet-stream".into()),
        bytes: bytes.into(),
        is_inline: new.is_inline.unwrap_or(false),
        content_id: new.content_id,
    };
    match attach(mailbox, message, attachment) {
        Some(v) => created(v),
        None => item_not_found(),
    }
}

/// Adds an attachment to a message (a new change of it); a message created
/// from JSON gets its MIME regenerated. The attachment's JSON, or None without the message.
pub(crate) fn attach(mailbox: &mut Mailbox, message: &str, attachment: Attachment) -> Option<Value> {
    mailbox.update(message, |m| {
        m.attachments.push(attachment);
        if let Some(c) = &m.composed {
            m.mime = compose::synthesize(c, m.sent.as_deref().unwrap_or_default(), &m.attachments);
        }
        let i = m.attachments.len() - 1;
        mail::attachment_json(&m.id, i, &m.attachments[i], false)
    })
}

fn patch_message(mailbox: &mut Mailbox, message: &str, body: &[u8]) -> Outcome {
    let patch: compose::MessagePatch = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return bad_request("RequestBodyRead", &format!("Invalid JSON: {e}")),
    };
    let flagged = patch.flag.as_ref().and_then(compose::Flag::flagged);
    let updated = mailbox.update(message, |m| {
        if let Some(read) = patch.is_read {
            m.is_read = read;
        }
        if let Some(flagged) = flagged {
            m.flagged = flagged;
        }
        mail::message_json(m)
    });
    updated.map(Outcome::ok).unwrap_or_else(item_not_found)
}
