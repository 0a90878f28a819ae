//! E-mail: a message with a plain-text and an HTML body, sent through SESv2
//! from the configured identity.

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
#[error("e-mail not sent: {0}")]
pub struct MailError(pub String);

/// One e-mail, in both forms.
#[derive(Debug, Clone, PartialEq)]
pub struct Email {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
    from: String,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client, from: impl Into<String>) -> Self {
        Self {
            client,
            from: from.into(),
        }
    }
}

#[async_trait]
impl Mailer for SesMailer {
    /// Sends the message as raw MIME built here ([`Email::to_mime`]), so what
    /// leaves is exactly what was rendered (and an emulator keeps both parts).
    /// The recipients are the `To` header's (SES reads them from it).
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        use aws_sdk_sesv2::primitives::Blob;
        use aws_sdk_sesv2::types::{EmailContent, RawMessage};
        let mime = email.to_mime(&self.from, chrono::Utc::now());
        let raw = RawMessage::builder()
            .data(Blob::new(mime.into_bytes()))
            .build()
            .map_err(|e| MailError(e.to_string()))?;
        self.client
            .send_email()
            .from_email_address(&self.from)
            .content(EmailContent::builder().raw(raw).build())
            .send()
            .await
            .map_err(|e| MailError(aws_sdk_sesv2::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }
}

impl Email {
    /// The message as MIME (RFC 2045-2047): `multipart/alternative` with the
    /// plain text first and the HTML last (the part mail clients prefer), both
    /// UTF-8 in base64; the subject as RFC 2047 encoded words when it is not
    /// plain ASCII. Control characters are dropped from every header, so no
    /// value can add a header of its own.
    pub fn to_mime(&self, from: &str, date: chrono::DateTime<chrono::Utc>) -> String {
        let boundary = format!("strata-{}", uuid::Uuid::new_v4().simple());
        let to: Vec<String> = self.to.iter().map(|a| header_safe(a)).collect();
        let mut out = String::new();
        out.push_str(&format!("From: {}\r\n", header_safe(from)));
        out.push_str(&format!("To: {}\r\n", to.join(", ")));
        out.push_str(&format!("Subject: {}\r\n", encode_header(&self.subject)));
        out.push_str(&format!("Date: {}\r\n", date.to_rfc2822()));
        out.push_str("MIME-Version: 1.0\r\n");
        out.push_str(&format!(
            "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n"
        ));
        for (kind, body) in [("text/plain", &self.text), ("text/html", &self.html)] {
            out.push_str(&format!("--{boundary}\r\n"));
            out.push_str(&format!("Content-Type: {kind}; charset=UTF-8\r\n"));
            out.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
            out.push_str(&base64_lines(body.as_bytes()));
        }
        out.push_str(&format!("--{boundary}--\r\n"));
        out
    }
}

/// A header value without control characters (no CR or LF can start a new header).
fn header_safe(value: &str) -> String {
    value.chars().filter(|c| !c.is_control()).collect()
}

/// A header value as is when it is printable ASCII, else as RFC 2047 encoded
/// words (`=?UTF-8?B?...?=`, each under 76 characters, folded onto lines of their own).
fn encode_header(value: &str) -> String {
    use base64::Engine;
    let value = header_safe(value);
    if value.chars().all(|c| c.is_ascii_graphic() || c == ' ') && !value.contains("=?") && value.len() <= 900 {
        return value;
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        // 45 bytes of UTF-8 are 60 of base64: each word stays within 75 characters.
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() || words.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(w)))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Base64 in lines of 76 characters, each ended by CRLF.
fn base64_lines(bytes: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(subject: &str) -> Email {
        Email {
            to: vec!["a@contoso.test".into(), "b@contoso.test\r\nBcc: evil@x.test".into()],
            subject: subject.into(),
            text: "Plain text: caf\u{e9}".into(),
            html: "<p>HTML: caf\u{e9}</p>".into(),
        }
    }

    #[test]
    fn mime_has_both_parts_and_reads_back() {
        let subject = "Strata daily report for Caf\u{e9} \u{2014} a long name that needs more than one encoded word";
        let mime = email(subject).to_mime("strata@example.com", chrono::Utc::now());
        let parsed = mail_parser::MessageParser::default()
            .parse(mime.as_bytes())
            .expect("parses");
        assert_eq!(parsed.subject(), Some(subject));
        assert_eq!(parsed.body_text(0).as_deref(), Some("Plain text: caf\u{e9}"));
        assert_eq!(parsed.body_html(0).as_deref(), Some("<p>HTML: caf\u{e9}</p>"));
        assert!(mime.contains("Content-Type: multipart/alternative;"));
        for line in mime.split("\r\n") {
            assert!(line.len() <= 998, "line too long: {line}");
        }
    }

    #[test]
    fn header_values_cannot_add_headers() {
        let mime = email("Hello\r\nBcc: evil@x.test").to_mime("strata@example.com", chrono::Utc::now());
        let headers = mime.split("\r\n\r\n").next().expect("headers");
        assert!(!headers.lines().any(|l| l.starts_with("Bcc:")), "{headers}");
        let parsed = mail_parser::MessageParser::default()
            .parse(mime.as_bytes())
            .expect("parses");
        assert!(parsed.bcc().is_none());
        assert_eq!(parsed.subject(), Some("HelloBcc: evil@x.test"));
    }
}
