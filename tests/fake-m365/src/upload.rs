//! Attachment upload sessions (saas-apis.md §A4, §A6 "Upload session"):
//! `createUploadSession` gives a pre-authenticated `uploadUrl` on the fake;
//! chunks go there by PUT with `Content-Range`, in order, at most 4 MiB each;
//! the last one adds the attachment to the message.

use crate::graph::item_not_found;
use crate::mail::Attachment;
use crate::server::{Inner, Outcome, Shared, graph_error};
use axum::http::{HeaderMap, Method, StatusCode, header};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;

/// The largest attachment an upload session takes (§A4: 3–150 MB).
pub const MAX_UPLOAD_SESSION_BYTES: u64 = 150 * 1024 * 1024;
/// The largest chunk one PUT may carry.
pub const MAX_UPLOAD_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// How long a session is announced to last (not enforced).
const SESSION_LIFETIME: chrono::Duration = chrono::Duration::hours(2);

/// Whose session it is and where its attachment goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The client id that created it: its PUTs count against this app's budgets.
    pub app: String,
    /// The mailbox owner's user id.
    pub owner: String,
    pub message_id: String,
}

#[derive(Debug, Clone)]
pub(crate) struct Session {
    target: Target,
    name: String,
    content_type: String,
    is_inline: bool,
    content_id: Option<String>,
    size: u64,
    received: Vec<u8>,
    expires: DateTime<Utc>,
}

#[derive(Deserialize)]
struct CreateBody {
    #[serde(rename = "AttachmentItem", alias = "attachmentItem")]
    item: AttachmentItem,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttachmentItem {
    #[serde(default)]
    attachment_type: Option<String>,
    #[serde(default)]
    name: Option<String>,
    size: u64,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    is_inline: Option<bool>,
    #[serde(default)]
    content_id: Option<String>,
}

fn bad_request(message: &str) -> Outcome {
    graph_error(StatusCode::BAD_REQUEST, "ErrorInvalidRequest", message)
}

fn expiration(s: &Session) -> String {
    // Graph writes 7 fraction digits; chrono has 6 or 9.
    format!("{}0Z", s.expires.format("%Y-%m-%dT%H:%M:%S%.6f"))
}

fn progress(s: &Session) -> Value {
    json!({"expirationDateTime": expiration(s), "nextExpectedRanges": [format!("{}-", s.received.len())]})
}

/// `POST .../messages/{id}/attachments/createUploadSession` (the message exists).
pub(crate) fn create(sessions: &mut HashMap<String, Session>, base: &str, target: Target, body: &[u8]) -> Outcome {
    let item = match serde_json::from_slice::<CreateBody>(body) {
        Ok(b) => b.item,
        Err(e) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "RequestBodyRead",
                &format!("Invalid JSON: {e}"),
            );
        }
    };
    if item
        .attachment_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("file"))
    {
        return bad_request("The fake supports only attachmentType 'file'.");
    }
    if item.size == 0 {
        return bad_request("The attachment size must be greater than zero.");
    }
    if item.size > MAX_UPLOAD_SESSION_BYTES {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ErrorAttachmentSizeLimitExceeded",
            "The attachment is over the 150 MB limit of an upload session.",
        );
    }
    let id = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let session = Session {
        target,
        name: item.name.unwrap_or_default(),
        content_type: item.content_type.unwrap_or_else(|| "application/octet-stream".into()),
        is_inline: item.is_inline.unwrap_or(false),
        content_id: item.content_id,
        size: item.size,
        received: Vec::new(),
        expires: Utc::now() + SESSION_LIFETIME,
    };
    let body = json!({
        "@odata.context": format!("{base}/v1.0/$metadata#microsoft.graph.uploadSession"),
        "uploadUrl": format!("{base}/upload/outlook/{id}"),
        "expirationDateTime": expiration(&session),
        "nextExpectedRanges": ["0-"],
    });
    sessions.insert(id, session);
    Outcome::json(StatusCode::CREATED, body)
}

/// An upload URL takes no `Authorization` header; its session names the app
/// and the mailbox (user id) it counts against.
pub(crate) fn authorize(inner: &Inner, id: &str, headers: &HeaderMap) -> Result<(String, String), Outcome> {
    if headers.contains_key(header::AUTHORIZATION) {
        return Err(graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The upload URL is pre-authenticated: send no Authorization header.",
        ));
    }
    match inner.uploads.get(id) {
        Some(s) => Ok((s.target.app.clone(), s.target.owner.clone())),
        None => Err(item_not_found()),
    }
}

/// `bytes a-b/total`.
fn content_range(headers: &HeaderMap) -> Option<(u64, u64, u64)> {
    let v = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let (range, total) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let (a, b, total) = (
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (a <= b).then_some((a, b, total))
}

/// PUT (a chunk), GET (the progress) or DELETE (cancel) on an upload URL.
pub(crate) fn serve(shared: &Shared, method: &Method, id: &str, headers: &HeaderMap, body: &[u8]) -> Outcome {
    let mut inner = shared.lock();
    match *method {
        Method::GET => match inner.uploads.get(id) {
            Some(s) => Outcome::ok(progress(s)),
            None => item_not_found(),
        },
        Method::DELETE => match inner.uploads.remove(id) {
            Some(_) => {
                let mut outcome = Outcome::raw(bytes::Bytes::new(), "text/plain");
                outcome.status = StatusCode::NO_CONTENT;
                outcome
            }
            None => item_not_found(),
        },
        Method::PUT => put(&mut inner, id, headers, body),
        _ => crate::graph::method_not_allowed(method),
    }
}

fn put(inner: &mut Inner, id: &str, headers: &HeaderMap, body: &[u8]) -> Outcome {
    let Some(session) = inner.uploads.get_mut(id) else {
        return item_not_found();
    };
    if body.len() > MAX_UPLOAD_CHUNK_BYTES {
        return graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ErrorRequestEntityTooLarge",
            "A chunk may carry at most 4 MiB (4,194,304 bytes).",
        );
    }
    let Some((start, end, total)) = content_range(headers) else {
        return bad_request("A Content-Range header 'bytes a-b/total' is required.");
    };
    if total != session.size {
        return bad_request(&format!(
            "The total {total} of Content-Range is not the declared size {}.",
            session.size
        ));
    }
    if end >= total || end - start + 1 != body.len() as u64 {
        return bad_request("The Content-Range does not match the body.");
    }
    if start != session.received.len() as u64 {
        let mut outcome = graph_error(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "InvalidRange",
            &format!(
                "The uploaded fragment does not start at the next expected byte {}.",
                session.received.len()
            ),
        );
        outcome.body["nextExpectedRanges"] = json!([format!("{}-", session.received.len())]);
        return outcome;
    }
    session.received.extend_from_slice(body);
    if (session.received.len() as u64) < session.size {
        return Outcome::ok(progress(session));
    }
    let Some(session) = inner.uploads.remove(id) else {
        return item_not_found();
    };
    let attachment = Attachment {
        name: session.name,
        content_type: session.content_type,
        bytes: session.received.into(),
        is_inline: session.is_inline,
        content_id: session.content_id,
    };
    let target = session.target;
    let added = inner
        .mailboxes
        .get_mut(&target.owner)
        .and_then(|m| crate::restore::attach(m, &target.message_id, attachment));
    match added {
        Some(v) => Outcome::json(StatusCode::CREATED, v),
        None => item_not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_range_is_parsed_strictly() {
        let mut h = HeaderMap::new();
        assert_eq!(content_range(&h), None);
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 0-327679/5242880"),
        );
        assert_eq!(content_range(&h), Some((0, 327_679, 5_242_880)));
        for bad in ["bytes 5-4/10", "bytes */10", "0-4/10", "bytes 0-x/10"] {
            h.insert(header::CONTENT_RANGE, HeaderValue::from_static(bad));
            assert_eq!(content_range(&h), None, "{bad}");
        }
    }
}
