//! Messages created from JSON (saas-apis.md §A4 "Restore", the non-draft
//! trick): the fields Graph takes, the extended properties that decide the
//! draft state, the read state and the dates, and the RFC 822 message
//! synthesized from them for `$value`.

use crate::mail::{Address, Attachment, Composed, NewItem};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// PR_MESSAGE_FLAGS: MSGFLAG_READ.
const MSGFLAG_READ: i64 = 0x1;
/// PR_MESSAGE_FLAGS: MSGFLAG_UNSENT (a draft).
const MSGFLAG_UNSENT: i64 = 0x8;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct NewMessage {
    subject: Option<String>,
    body: Option<ItemBody>,
    from: Option<Recipient>,
    sender: Option<Recipient>,
    to_recipients: Option<Vec<Recipient>>,
    cc_recipients: Option<Vec<Recipient>>,
    bcc_recipients: Option<Vec<Recipient>>,
    reply_to: Option<Vec<Recipient>>,
    internet_message_id: Option<String>,
    is_read: Option<bool>,
    importance: Option<String>,
    flag: Option<Flag>,
    categories: Option<Vec<String>>,
    single_value_extended_properties: Option<Vec<ExtendedProperty>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ItemBody {
    content_type: Option<String>,
    content: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Recipient {
    email_address: Option<EmailAddress>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EmailAddress {
    name: Option<String>,
    address: Option<String>,
}

/// `flag` of a message (create and PATCH).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Flag {
    pub flag_status: Option<String>,
}

impl Flag {
    /// `flagged`: true; `notFlagged` and `complete`: false.
    pub fn flagged(&self) -> Option<bool> {
        self.flag_status.as_deref().map(|s| s.eq_ignore_ascii_case("flagged"))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ExtendedProperty {
    id: String,
    value: Option<String>,
}

/// `PATCH /messages/{id}`: the fields the fake applies.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct MessagePatch {
    pub is_read: Option<bool>,
    pub flag: Option<Flag>,
}

fn address(r: Option<&Recipient>) -> Option<Address> {
    let e = r?.email_address.as_ref()?;
    let address = e.address.clone().unwrap_or_default();
    let name = e.name.clone().unwrap_or_else(|| address.clone());
    Some(Address { name, address })
}

fn addresses(list: Option<&Vec<Recipient>>) -> Vec<Address> {
    list.map(|l| l.iter().filter_map(|r| address(Some(r))).collect())
        .unwrap_or_default()
}

/// An extended property id, normalized: `integer 0x0e07`.
fn property_key(id: &str) -> String {
    id.split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_time(value: &str) -> Option<String> {
    let t = DateTime::parse_from_rfc3339(value.trim())
        .map(|d| d.with_timezone(&Utc))
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(value.trim(), "%Y-%m-%dT%H:%M:%S%.f").map(|n| n.and_utc()))
        .ok()?;
    Some(iso(t))
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn parse_flags(value: &str) -> Option<i64> {
    let v = value.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// A message from the JSON body of `POST .../messages`, or the reason for a 400.
pub(crate) fn from_json(body: &[u8], now: DateTime<Utc>) -> Result<NewItem, String> {
    let m: NewMessage = serde_json::from_slice(body).map_err(|e| format!("Invalid JSON: {e}"))?;
    let mut flags = None;
    let mut received = None;
    let mut sent = None;
    for p in m.single_value_extended_properties.iter().flatten() {
        let value = p.value.as_deref().unwrap_or_default();
        match property_key(&p.id).as_str() {
            "integer 0x0e07" => {
                flags = Some(parse_flags(value).ok_or_else(|| format!("Invalid value '{value}' for {}", p.id))?);
            }
            "systemtime 0x0e06" => {
                received = Some(parse_time(value).ok_or_else(|| format!("Invalid value '{value}' for {}", p.id))?);
            }
            "systemtime 0x0039" => {
                sent = Some(parse_time(value).ok_or_else(|| format!("Invalid value '{value}' for {}", p.id))?);
            }
            _ => {}
        }
    }
    let created = iso(now);
    let sent = sent.unwrap_or_else(|| created.clone());
    let body = m.body.unwrap_or_default();
    let composed = Composed {
        subject: m.subject.unwrap_or_default(),
        body_html: body
            .content_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("html")),
        body: body.content.unwrap_or_default(),
        from: address(m.from.as_ref()),
        sender: address(m.sender.as_ref()),
        to: addresses(m.to_recipients.as_ref()),
        cc: addresses(m.cc_recipients.as_ref()),
        bcc: addresses(m.bcc_recipients.as_ref()),
        reply_to: addresses(m.reply_to.as_ref()),
        internet_message_id: m
            .internet_message_id
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(|| format!("<{}@fake-m365>", uuid::Uuid::new_v4().simple())),
        importance: m
            .importance
            .map(|i| i.to_ascii_lowercase())
            .unwrap_or_else(|| "normal".into()),
        categories: m.categories.unwrap_or_default(),
    };
    let mime = synthesize(&composed, &sent, &[]);
    Ok(NewItem {
        mime,
        is_read: match flags {
            Some(f) => f & MSGFLAG_READ != 0,
            None => m.is_read.unwrap_or(false),
        },
        flagged: m.flag.and_then(|f| f.flagged()).unwrap_or(false),
        is_draft: flags.is_none_or(|f| f & MSGFLAG_UNSENT != 0),
        received: Some(received.unwrap_or(created)),
        sent: Some(sent),
        composed: Some(composed),
    })
}

/// An RFC 2047 encoded word when `s` is not plain ASCII.
fn encode_word(s: &str) -> String {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        s.to_string()
    } else {
        format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(s))
    }
}

fn mailbox_header(a: &Address) -> String {
    if a.name.is_empty() || a.name == a.address {
        a.address.clone()
    } else if a.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ') {
        format!("{} <{}>", a.name, a.address)
    } else if a.name.is_ascii() {
        format!("\"{}\" <{}>", a.name.replace(['"', '\\'], ""), a.address)
    } else {
        format!("{} <{}>", encode_word(&a.name), a.address)
    }
}

fn list_header(list: &[Address]) -> String {
    list.iter().map(mailbox_header).collect::<Vec<_>>().join(", ")
}

/// Base64 in lines of 76 characters.
fn base64_lines(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

fn rfc2822(iso_time: &str) -> String {
    DateTime::parse_from_rfc3339(iso_time)
        .map(|d| d.to_rfc2822())
        .unwrap_or_else(|_| Utc::now().to_rfc2822())
}

/// The RFC 822 message of a message created from JSON: its headers, the body
/// as text/plain or text/html, and the attachments as base64 parts of a multipart/mixed.
pub(crate) fn synthesize(c: &Composed, sent: &str, attachments: &[Attachment]) -> bytes::Bytes {
    let mut head = Vec::new();
    if let Some(from) = &c.from {
        head.push(format!("From: {}", mailbox_header(from)));
    }
    if let Some(sender) = c.sender.as_ref().filter(|s| Some(*s) != c.from.as_ref()) {
        head.push(format!("Sender: {}", mailbox_header(sender)));
    }
    for (name, list) in [("To", &c.to), ("Cc", &c.cc), ("Reply-To", &c.reply_to)] {
        if !list.is_empty() {
            head.push(format!("{name}: {}", list_header(list)));
        }
    }
    head.push(format!("Subject: {}", encode_word(&c.subject)));
    head.push(format!("Date: {}", rfc2822(sent)));
    head.push(format!("Message-ID: {}", c.internet_message_id));
    if c.importance != "normal" {
        head.push(format!("Importance: {}", c.importance));
    }
    head.push("MIME-Version: 1.0".into());
    let body_type = if c.body_html { "text/html" } else { "text/plain" };
    let body_part = format!(
        "Content-Type: {body_type}; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        base64_lines(c.body.as_bytes())
    );
    let mut out = head.join("\r\n");
    out.push_str("\r\n");
    if attachments.is_empty() {
        out.push_str(&body_part);
        return bytes::Bytes::from(out);
    }
    let boundary = format!("=_fake_m365_{}", uuid::Uuid::new_v4().simple());
    out.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n{body_part}"
    ));
    for a in attachments {
        let disposition = if a.is_inline { "inline" } else { "attachment" };
        let name = encode_word(&a.name).replace('"', "");
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: {}; name=\"{name}\"\r\nContent-Disposition: {disposition}; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n",
            a.content_type
        ));
        if let Some(cid) = &a.content_id {
            out.push_str(&format!("Content-ID: <{}>\r\n", cid.trim_matches(['<', '>'])));
        }
        out.push_str("\r\n");
        out.push_str(&base64_lines(&a.bytes));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    bytes::Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_decide_draft_and_read_and_ids_ignore_case() {
        let now = Utc::now();
        let draft = from_json(br#"{"subject":"a","isRead":true}"#, now).expect("plain");
        assert!(draft.is_draft && draft.is_read);
        assert_eq!(draft.received, draft.sent);
        let sent = from_json(
            br#"{"subject":"a","isRead":true,"singleValueExtendedProperties":[
                {"id":"Integer 0x0e07","value":"0"},
                {"id":"SYSTEMTIME 0x0E06","value":"2024-03-01T10:00:00Z"},
                {"id":"SystemTime 0x0039","value":"2024-03-01T09:59:00.000+00:00"}]}"#,
            now,
        )
        .expect("flags");
        assert!(!sent.is_draft && !sent.is_read, "bit 0x1 wins over isRead");
        assert_eq!(sent.received.as_deref(), Some("2024-03-01T10:00:00Z"));
        assert_eq!(sent.sent.as_deref(), Some("2024-03-01T09:59:00Z"));
        let unsent = from_json(
            br#"{"singleValueExtendedProperties":[{"id":"Integer 0x0E07","value":"9"}]}"#,
            now,
        )
        .expect("unsent");
        assert!(unsent.is_draft && unsent.is_read);
        assert!(from_json(b"{nope", now).is_err());
        assert!(
            from_json(
                br#"{"singleValueExtendedProperties":[{"id":"SystemTime 0x0039","value":"yesterday"}]}"#,
                now
            )
            .is_err()
        );
    }

    #[test]
    fn synthesized_mime_has_headers_body_and_attachments() {
        let c = Composed {
            subject: "Grüße".into(),
            body: "hello".into(),
            from: Some(Address {
                name: "Ann Lee".into(),
                address: "ann@contoso.com".into(),
            }),
            to: vec![Address {
                name: "bob@contoso.com".into(),
                address: "bob@contoso.com".into(),
            }],
            internet_message_id: "<x@y>".into(),
            importance: "normal".into(),
            ..Composed::default()
        };
        let a = Attachment {
            name: "a.txt".into(),
            content_type: "text/plain".into(),
            bytes: bytes::Bytes::from_static(b"attached"),
            is_inline: false,
            content_id: None,
        };
        let mime = synthesize(&c, "2024-03-01T09:59:00Z", std::slice::from_ref(&a));
        let text = String::from_utf8_lossy(&mime);
        let h = crate::mail::headers(&mime);
        assert_eq!(h["from"], "Ann Lee <ann@contoso.com>");
        assert_eq!(h["to"], "bob@contoso.com");
        assert_eq!(h["date"], "Fri, 1 Mar 2024 09:59:00 +0000");
        // Encoded in the MIME (RFC 2047), decoded as Graph shows it.
        assert!(text.contains("Subject: =?UTF-8?B?"));
        assert_eq!(h["subject"], "Grüße");
        assert!(h["content-type"].starts_with("multipart/mixed"));
        assert!(text.contains("filename=\"a.txt\""));
        assert!(text.contains(&base64::engine::general_purpose::STANDARD.encode("attached")));
    }
}
