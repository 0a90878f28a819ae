//! The write side of Graph mail over HTTP: what a restore does (saas-apis.md
//! §A4 "Restore", "Create a folder"; §A8 upload budget).

use base64::Engine;
use fake_m365::{
    FakeM365, FaultKind, FaultRule, Faults, MAILBOX_UPLOAD_BYTES_PER_WINDOW, MAX_ATTACHMENT_BYTES,
    MAX_UPLOAD_CHUNK_BYTES, Options, Tenant, UserKind,
};
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

const GRAPH: &str = "https://graph.microsoft.com/.default";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn bearer(fake: &FakeM365) -> String {
    let client = fake.client_id();
    let secret = fake.client_secret();
    let form = [
        ("client_id", client.as_str()),
        ("client_secret", secret.as_str()),
        ("scope", GRAPH),
        ("grant_type", "client_credentials"),
    ];
    let resp = http()
        .post(format!("{}/{}/oauth2/v2.0/token", fake.url(), fake.tenant_id()))
        .form(&form)
        .send()
        .await
        .expect("token request");
    let body: Value = resp.json().await.expect("json");
    body["access_token"].as_str().expect("token").to_string()
}

struct Got {
    status: u16,
    headers: HeaderMap,
    body: Value,
    raw: Vec<u8>,
}

impl Got {
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
    fn retry_after(&self) -> Option<u32> {
        self.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }
}

async fn send(request: RequestBuilder) -> Got {
    let resp = request.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let raw = resp.bytes().await.expect("body").to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Got {
        status,
        headers,
        body,
        raw,
    }
}

/// A fake with a licensed user: (fake, token, user id).
async fn setup(options: Options) -> (FakeM365, String, String) {
    let fake = FakeM365::start(Tenant::small_demo(), options).await.expect("fake");
    let token = bearer(&fake).await;
    let user = fake
        .tenant()
        .users
        .into_iter()
        .find(|u| u.kind == UserKind::Licensed)
        .expect("a licensed user")
        .id;
    (fake, token, user)
}

struct Graph<'a> {
    fake: &'a FakeM365,
    token: &'a str,
    user: &'a str,
}

impl Graph<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}/v1.0/users/{}{path}", self.fake.url(), self.user)
    }
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        http().request(method, self.url(path)).bearer_auth(self.token)
    }
    async fn get(&self, path: &str) -> Got {
        send(self.request(Method::GET, path)).await
    }
    async fn post(&self, path: &str, body: Value) -> Got {
        send(self.request(Method::POST, path).json(&body)).await
    }
    async fn post_mime(&self, folder: &str, mime: &[u8]) -> Got {
        let request = self
            .request(Method::POST, &format!("/mailFolders/{folder}/messages"))
            .header("content-type", "text/plain")
            .body(B64.encode(mime));
        send(request).await
    }
    /// A new top-level folder; its id.
    async fn folder(&self, name: &str) -> String {
        let got = self
            .post("/mailFolders", json!({"displayName": name, "isHidden": false}))
            .await;
        assert_eq!(got.status, 201, "{}", got.body);
        got.body["id"].as_str().expect("id").to_string()
    }
    /// A message created from JSON in `folder`; its id.
    async fn message(&self, folder: &str, body: Value) -> String {
        let got = self.post(&format!("/mailFolders/{folder}/messages"), body).await;
        assert_eq!(got.status, 201, "{}", got.body);
        got.body["id"].as_str().expect("id").to_string()
    }
    /// An upload session for `size` bytes on a message; its uploadUrl.
    async fn session(&self, message: &str, size: usize) -> String {
        let got = self
            .post(
                &format!("/messages/{message}/attachments/createUploadSession"),
                json!({"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": size, "contentType": "application/octet-stream"}}),
            )
            .await;
        assert_eq!(got.status, 201, "{}", got.body);
        assert_eq!(got.body["nextExpectedRanges"], json!(["0-"]));
        assert!(got.body["expirationDateTime"].is_string());
        got.body["uploadUrl"].as_str().expect("uploadUrl").to_string()
    }
}

/// A PUT of `bytes[start..end]` to an upload URL, without Authorization.
async fn put_chunk(url: &str, bytes: &[u8], start: usize, end: usize, total: usize) -> Got {
    let request = http()
        .put(url)
        .header("content-range", format!("bytes {start}-{}/{total}", end - 1))
        .body(bytes[start..end].to_vec());
    send(request).await
}

/// A PUT of `body` at `start` of `total` to an upload URL.
async fn put_range(url: &str, body: &[u8], start: usize, total: usize) -> Got {
    let request = http()
        .put(url)
        .header(
            "content-range",
            format!("bytes {start}-{}/{total}", start + body.len() - 1),
        )
        .body(body.to_vec());
    send(request).await
}

fn mime(subject: &str) -> Vec<u8> {
    format!(
        "From: Ann Lee <ann@contoso.com>\r\nTo: bob@contoso.com\r\nSubject: {subject}\r\nDate: Tue, 3 Mar 2026 09:00:00 +0000\r\nMessage-ID: <m1@contoso.com>\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    )
    .into_bytes()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn folders_are_created_nested_and_a_duplicate_sibling_is_a_conflict() {
    let (fake, token, user) = setup(Options::default()).await;
    let g = Graph {
        fake: &fake,
        token: &token,
        user: &user,
    };
    let root_name = "Restored 2026-11-25 10:00";
    let root = g.folder(root_name).await;
    let inbox = g
        .post(
            &format!("/mailFolders/{root}/childFolders"),
            json!({"displayName": "Inbox"}),
        )
        .await;
    assert_eq!(inbox.status, 201, "{}", inbox.body);
    assert_eq!(inbox.body["displayName"], "Inbox");
    assert_eq!(inbox.body["parentFolderId"], root.as_str());
    assert_eq!(inbox.body["isHidden"], false);
    assert_eq!(inbox.body["totalItemCount"], 0);
    let inbox = inbox.body["id"].as_str().expect("id").to_string();
    let projects = g
        .post(
            &format!("/mailFolders/{inbox}/childFolders"),
            json!({"displayName": "Projects"}),
        )
        .await;
    assert_eq!(projects.status, 201);
    let projects = projects.body["id"].as_str().expect("id").to_string();
    assert_eq!(
        fake.folder_path_of(&user, &projects).as_deref(),
        Some("Restored 2026-11-25 10:00/Inbox/Projects")
    );

    let listed = g.get(&format!("/mailFolders/{root}/childFolders")).await;
    assert_eq!(listed.body["value"][0]["id"], inbox.as_str());

    let dup = g
        .post(
            &format!("/mailFolders/{root}/childFolders"),
            json!({"displayName": "INBOX"}),
        )
        .await;
    assert_eq!(
        (dup.status, dup.code()),
        (409, Some("ErrorFolderExists")),
        "{}",
        dup.body
    );
    let dup_top = g
        .post("/mailFolders", json!({"displayName": root_name.to_lowercase()}))
        .await;
    assert_eq!((dup_top.status, dup_top.code()), (409, Some("ErrorFolderExists")));
    assert_eq!(
        g.post("/mailFolders", json!({"displayName": "Inbox"})).await.status,
        409,
        "the well-known Inbox is a top-level sibling too"
    );
    let orphan = g
        .post("/mailFolders/AAMkFnope/childFolders", json!({"displayName": "X"}))
        .await;
    assert_eq!((orphan.status, orphan.code()), (404, Some("ErrorItemNotFound")));
    assert_eq!(g.post("/mailFolders", json!({"displayName": ""})).await.status, 400);
    assert_eq!(g.post("/mailFolders", json!({"isHidden": false})).await.status, 400);
    let malformed = send(g.request(Method::POST, "/mailFolders").body("{nope")).await;
    assert_eq!(malformed.status, 400);

    let anonymous = send(http().post(g.url("/mailFolders")).json(&json!({"displayName": "Y"}))).await;
    assert_eq!(
        (anonymous.status, anonymous.code()),
        (401, Some("InvalidAuthenticationToken"))
    );
    let put = send(g.request(Method::PUT, "/mailFolders").json(&json!({}))).await;
    assert_eq!(put.status, 405);

    fake.set_faults(Faults {
        rules: vec![FaultRule {
            path_contains: Some("/childFolders".into()),
            kind: FaultKind::Status {
                status: 503,
                retry_after_secs: None,
            },
            probability: 1.0,
            remaining: Some(1),
        }],
    });
    let faulted = g
        .post(
            &format!("/mailFolders/{root}/childFolders"),
            json!({"displayName": "Sent Items"}),
        )
        .await;
    assert_eq!(faulted.status, 503, "writes get injected faults");
    let again = g
        .post(
            &format!("/mailFolders/{root}/childFolders"),
            json!({"displayName": "Sent Items"}),
        )
        .await;
    assert_eq!(again.status, 201);

    let posts = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("Folders"))
        .count();
    assert_eq!(posts, 13, "every POST is logged with its method");
}

#[tokio::test]
async fn a_message_created_from_mime_is_always_a_draft() {
    let (fake, token, user) = setup(Options::default()).await;
    let g = Graph {
        fake: &fake,
        token: &token,
        user: &user,
    };
    let folder = g.folder("Restored").await;
    let raw = mime("From MIME");
    let got = g.post_mime(&folder, &raw).await;
    assert_eq!(got.status, 201, "{}", got.body);
    assert_eq!(got.body["isDraft"], true);
    assert_eq!(got.body["subject"], "From MIME");
    assert_eq!(got.body["parentFolderId"], folder.as_str());
    assert_eq!(got.body["sentDateTime"], "2026-03-03T09:00:00Z");
    assert_eq!(got.body["from"]["emailAddress"]["address"], "ann@contoso.com");
    let id = got.body["id"].as_str().expect("id");

    let value = g.get(&format!("/messages/{id}/$value")).await;
    assert_eq!(value.raw, raw, "the MIME is kept as sent");
    assert_eq!(g.get(&format!("/messages/{id}")).await.body["isDraft"], true);
    let stored = fake.messages_in(&user, "Restored");
    assert_eq!(stored.len(), 1);
    assert!(stored[0].is_draft);
    assert!(stored[0].attachments.is_empty());

    let bad = send(
        g.request(Method::POST, &format!("/mailFolders/{folder}/messages"))
            .header("content-type", "text/plain")
            .body("this is not base64!"),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["message"], "Invalid base64 string for MIME content");
    let nowhere = g.post_mime("AAMkFnope", &raw).await;
    assert_eq!((nowhere.status, nowhere.code()), (404, Some("ErrorItemNotFound")));

    let seeded = fake.messages_in(&user, "Inbox");
    assert!(seeded.iter().all(|m| !m.is_draft), "delivered messages are not drafts");
}

#[tokio::test]
async fn a_json_message_with_the_extended_properties_is_sent_read_and_dated() {
    let (fake, token, user) = setup(Options::default()).await;
    let g = Graph {
        fake: &fake,
        token: &token,
        user: &user,
    };
    let root = g.folder("Restored 2026-11-25 10:00").await;
    let got = g
        .post(
            &format!("/mailFolders/{root}/childFolders"),
            json!({"displayName": "Inbox"}),
        )
        .await;
    let folder = got.body["id"].as_str().expect("id").to_string();
    let created = g
        .post(
            &format!("/mailFolders/{folder}/messages"),
            json!({
                "subject": "Quarterly numbers",
                "body": {"contentType": "html", "content": "<p>See attached</p>"},
                "from": {"emailAddress": {"name": "Ann Lee", "address": "ann@contoso.com"}},
                "sender": {"emailAddress": {"name": "Ann Lee", "address": "ann@contoso.com"}},
                "toRecipients": [{"emailAddress": {"name": "Bob", "address": "bob@contoso.com"}}],
                "ccRecipients": [{"emailAddress": {"name": "Cy", "address": "cy@contoso.com"}}],
                "bccRecipients": [{"emailAddress": {"address": "dee@contoso.com"}}],
                "replyTo": [],
                "internetMessageId": "<q3@contoso.com>",
                "importance": "high",
                "flag": {"flagStatus": "flagged"},
                "categories": ["Finance"],
                "somethingGraphAddsLater": {"x": 1},
                "singleValueExtendedProperties": [
                    {"id": "Integer 0x0e07", "value": "1"},
                    {"id": "SystemTime 0x0E06", "value": "2025-04-01T08:30:00Z"},
                    {"id": "SystemTime 0x0039", "value": "2025-04-01T08:29:00Z"},
                ],
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let m = &created.body;
    assert_eq!(m["isDraft"], false);
    assert_eq!(m["isRead"], true);
    assert_eq!(m["receivedDateTime"], "2025-04-01T08:30:00Z");
    assert_eq!(m["sentDateTime"], "2025-04-01T08:29:00Z");
    assert_eq!(m["flag"]["flagStatus"], "flagged");
    assert_eq!(m["subject"], "Quarterly numbers");
    assert_eq!(m["toRecipients"][0]["emailAddress"]["address"], "bob@contoso.com");
    assert_eq!(m["ccRecipients"][0]["emailAddress"]["name"], "Cy");
    assert_eq!(m["hasAttachments"], false);
    let id = m["id"].as_str().expect("id").to_string();

    let content = b"col1,col2\n1,2\n".to_vec();
    let attached = g
        .post(
            &format!("/messages/{id}/attachments"),
            json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "q3.csv", "contentType": "text/csv",
                   "contentBytes": B64.encode(&content), "isInline": false}),
        )
        .await;
    assert_eq!(attached.status, 201, "{}", attached.body);
    assert_eq!(attached.body["name"], "q3.csv");
    assert_eq!(attached.body["size"], content.len());
    assert_eq!(attached.body["isInline"], false);
    assert!(attached.body["id"].is_string());

    let delta = g.get(&format!("/mailFolders/{folder}/messages/delta")).await;
    assert_eq!(delta.status, 200);
    let items = delta.body["value"].as_array().expect("value");
    assert_eq!(items.len(), 1, "{}", delta.body);
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["isDraft"], false);
    assert_eq!(items[0]["hasAttachments"], true);
    assert_eq!(items[0]["receivedDateTime"], "2025-04-01T08:30:00Z");

    let value = g.get(&format!("/messages/{id}/$value")).await;
    assert_eq!(value.status, 200);
    let text = String::from_utf8_lossy(&value.raw).to_string();
    for want in [
        "From: Ann Lee <ann@contoso.com>",
        "To: Bob <bob@contoso.com>",
        "Cc: Cy <cy@contoso.com>",
        "Subject: Quarterly numbers",
        "Date: Tue, 1 Apr 2025 08:29:00 +0000",
        "Message-ID: <q3@contoso.com>",
        "multipart/mixed",
        "Content-Type: text/html; charset=utf-8",
        "filename=\"q3.csv\"",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    assert!(text.contains(&B64.encode(&content)));
    assert!(text.contains(&B64.encode("<p>See attached</p>")));

    let listed = g.get(&format!("/messages/{id}/attachments")).await;
    assert_eq!(listed.body["value"][0]["contentBytes"], B64.encode(&content));

    let stored = fake.messages_in(&user, "Restored 2026-11-25 10:00/Inbox");
    assert_eq!(stored.len(), 1);
    let s = &stored[0];
    assert!(!s.is_draft && s.is_read && s.flagged);
    assert_eq!(s.received.as_deref(), Some("2025-04-01T08:30:00Z"));
    assert_eq!(s.sent.as_deref(), Some("2025-04-01T08:29:00Z"));
    assert_eq!(s.attachments.len(), 1);
    assert_eq!(s.attachments[0].bytes.as_ref(), content.as_slice());
    assert_eq!(s.attachments[0].content_type, "text/csv");

    let patched = send(
        g.request(Method::PATCH, &format!("/messages/{id}"))
            .json(&json!({"isRead": false, "flag": {"flagStatus": "notFlagged"}, "subject": "ignored"})),
    )
    .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let now = g.get(&format!("/messages/{id}")).await.body;
    assert_eq!(
        (now["isRead"].clone(), now["flag"]["flagStatus"].clone()),
        (json!(false), json!("notFlagged"))
    );
    assert_eq!(now["subject"], "Quarterly numbers");

    // Without the properties: a draft, unread unless isRead, dated now.
    let plain = g
        .post(
            &format!("/mailFolders/{folder}/messages"),
            json!({"subject": "draft", "isRead": true}),
        )
        .await;
    assert_eq!(plain.body["isDraft"], true);
    assert_eq!(plain.body["isRead"], true);
    assert_eq!(plain.body["receivedDateTime"], plain.body["sentDateTime"]);
    let unread = g
        .post(
            &format!("/mailFolders/{folder}/messages"),
            json!({"subject": "unread", "isRead": true, "singleValueExtendedProperties": [{"id": "Integer 0x0E07", "value": "0"}]}),
        )
        .await;
    assert_eq!(
        (unread.body["isDraft"].clone(), unread.body["isRead"].clone()),
        (json!(false), json!(false))
    );

    let malformed = send(
        g.request(Method::POST, &format!("/mailFolders/{folder}/messages"))
            .header("content-type", "application/json")
            .body("{\"subject\": "),
    )
    .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(fake.messages_in(&user, "Restored 2026-11-25 10:00/Inbox").len(), 3);
}

#[tokio::test]
async fn a_five_megabyte_attachment_goes_through_an_upload_session_in_two_chunks() {
    let (fake, token, user) = setup(Options::default()).await;
    let g = Graph {
        fake: &fake,
        token: &token,
        user: &user,
    };
    let folder = g.folder("Restored").await;
    let id = g.message(&folder, json!({"subject": "big one"})).await;
    let size = 5 * 1024 * 1024;
    let bytes = pattern(size);
    let url = g.session(&id, size).await;
    assert!(url.starts_with(&format!("{}/upload/outlook/", fake.url())), "{url}");

    let first = 12 * 327_680;
    let got = put_chunk(&url, &bytes, 0, first, size).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["nextExpectedRanges"], json!([format!("{first}-")]));
    assert!(got.body["expirationDateTime"].is_string());
    let status = send(http().get(&url)).await;
    assert_eq!(status.body["nextExpectedRanges"], json!([format!("{first}-")]));
    let got = put_chunk(&url, &bytes, first, size, size).await;
    assert_eq!(got.status, 201, "{}", got.body);
    assert_eq!(got.body["size"], size);

    let listed = g.get(&format!("/messages/{id}/attachments")).await;
    let value = listed.body["value"].as_array().expect("value");
    assert_eq!(value.len(), 1);
    assert_eq!(value[0]["name"], "big.bin");
    assert_eq!(value[0]["size"], size);
    let decoded = B64
        .decode(value[0]["contentBytes"].as_str().expect("contentBytes"))
        .expect("base64");
    assert!(decoded == bytes, "the bytes come back whole");
    assert_eq!(g.get(&format!("/messages/{id}")).await.body["hasAttachments"], true);
    assert_eq!(
        put_chunk(&url, &bytes, 0, 10, size).await.status,
        404,
        "the session is over"
    );

    let log = fake.requests();
    let puts: Vec<_> = log.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 3);
    assert!(
        puts[..2].iter().all(|r| r.mailbox.as_deref() == Some(user.as_str())
            && r.throttle_scope.as_deref() == Some(format!("mailbox:{user}").as_str())),
        "upload PUTs count against the mailbox"
    );
    assert_eq!(
        log.iter().filter(|r| r.method == "POST").count(),
        4,
        "token, folder, message, session"
    );
}

#[tokio::test]
async fn upload_chunks_must_come_in_order_and_fit() {
    let (fake, token, user) = setup(Options::default()).await;
    let g = Graph {
        fake: &fake,
        token: &token,
        user: &user,
    };
    let folder = g.folder("Restored").await;
    let id = g.message(&folder, json!({"subject": "chunks"})).await;
    let size = 1000;
    let bytes = pattern(size);
    let url = g.session(&id, size).await;

    let ahead = put_chunk(&url, &bytes, 500, 1000, size).await;
    assert_eq!(ahead.status, 416, "{}", ahead.body);
    assert_eq!(put_chunk(&url, &bytes, 0, 500, size).await.status, 200);
    assert_eq!(
        put_chunk(&url, &bytes, 0, 500, size).await.status,
        416,
        "a replayed chunk"
    );
    assert_eq!(
        put_chunk(&url, &bytes, 500, 1000, 2000).await.status,
        400,
        "total is not the size"
    );
    let no_range = send(http().put(&url).body(vec![0u8; 10])).await;
    assert_eq!(no_range.status, 400);
    assert_eq!(put_chunk(&url, &bytes, 500, 1000, size).await.status, 201);

    let big = MAX_UPLOAD_CHUNK_BYTES + 1;
    let url = g.session(&id, big * 2).await;
    let got = put_chunk(&url, &pattern(big), 0, big, big * 2).await;
    assert_eq!(got.status, 413, "a chunk over 4 MiB");

    let too_big = g
        .post(
            &format!("/messages/{id}/attachments/createUploadSession"),
            json!({"AttachmentItem": {"attachmentType": "file", "name": "huge", "size": 150 * 1024 * 1024 + 1}}),
        )
        .await;
    assert_eq!(too_big.status, 413);
    let unknown = g
        .post(
            "/messages/AAMkMnope/attachments/createUploadSession",
            json!({"AttachmentItem": {"attachmentType": "file", "name": "x", "size": 10}}),
        )
        .await;
    assert_eq!((unknown.status, unknown.code()), (404, Some("ErrorItemNotFound")));
}

#[tokio::test]
async fn an_upload_url_refuses_an_authorization_header_and_can_be_cancelled() {
    let (fake, token, user) = setup(Options::default()).await;
    let g = Graph {
        fake: &fake,
        token: &token,
        user: &user,
    };
    let folder = g.folder("Restored").await;
    let id = g.message(&folder, json!({"subject": "auth"})).await;
    let bytes = pattern(100);
    let url = g.session(&id, 100).await;
    let with_auth = send(
        http()
            .put(&url)
            .bearer_auth(&token)
            .header("content-range", "bytes 0-99/100")
            .body(bytes.clone()),
    )
    .await;
    assert_eq!(with_auth.status, 401, "{}", with_auth.body);
    let cancelled = send(http().delete(&url)).await;
    assert_eq!(cancelled.status, 204);
    assert_eq!(put_chunk(&url, &bytes, 0, 100, 100).await.status, 404);
    assert!(fake.messages_in(&user, "Restored")[0].attachments.is_empty());
}

#[tokio::test]
async fn a_direct_attachment_over_3_mib_is_refused_with_413() {
    let (fake, token, user) = setup(Options::default()).await;
    let g = Graph {
        fake: &fake,
        token: &token,
        user: &user,
    };
    let folder = g.folder("Restored").await;
    let id = g.message(&folder, json!({"subject": "attachments"})).await;
    let attach = |len: usize| {
        json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "a.bin", "contentType": "application/octet-stream",
               "contentBytes": B64.encode(pattern(len))})
    };
    let over = g
        .post(&format!("/messages/{id}/attachments"), attach(MAX_ATTACHMENT_BYTES + 1))
        .await;
    assert_eq!(
        (over.status, over.code()),
        (413, Some("ErrorRequestEntityTooLarge")),
        "{}",
        over.body
    );
    let at_limit = g
        .post(&format!("/messages/{id}/attachments"), attach(MAX_ATTACHMENT_BYTES))
        .await;
    assert_eq!(at_limit.status, 201);
    let bad = g
        .post(
            &format!("/messages/{id}/attachments"),
            json!({"@odata.type": "#microsoft.graph.fileAttachment", "name": "x", "contentBytes": "***"}),
        )
        .await;
    assert_eq!(bad.status, 400);
    let listed = g.get(&format!("/messages/{id}/attachments")).await;
    assert_eq!(listed.body["value"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn the_upload_budget_of_150_mb_per_5_minutes_gives_429() {
    let (fake, token, user) = setup(Options::default()).await;
    let g = Graph {
        fake: &fake,
        token: &token,
        user: &user,
    };
    let folder = g.folder("Restored").await;
    let id = g.message(&folder, json!({"subject": "budget"})).await;
    let size = MAILBOX_UPLOAD_BYTES_PER_WINDOW as usize;
    let chunk = MAX_UPLOAD_CHUNK_BYTES;
    let url = g.session(&id, size).await;
    let bytes = pattern(chunk);
    let mut refused = None;
    for (i, start) in (0..size).step_by(chunk).enumerate() {
        let len = chunk.min(size - start);
        let got = put_range(&url, &bytes[..len], start, size).await;
        if got.status != 200 {
            refused = Some((i, got));
            break;
        }
    }
    let (i, got) = refused.expect("refused before the end");
    assert_eq!(
        i, 37,
        "37 chunks of 4 MiB (148 MiB) pass; the last 2 MiB would cross 150 MiB with the JSON bodies before"
    );
    assert_eq!(
        (got.status, got.code()),
        (429, Some("ApplicationThrottled")),
        "{}",
        got.body
    );
    let retry = got.retry_after().expect("Retry-After");
    assert!((1..=300).contains(&retry), "{retry}");
    let folder_post = g.post("/mailFolders", json!({"displayName": "later"})).await;
    assert_eq!(folder_post.status, 429, "the mailbox stays closed until Retry-After");
    assert!(folder_post.retry_after().is_some());
    let logged = fake.requests();
    let last = logged.last().expect("logged");
    assert_eq!((last.method.as_str(), last.status), ("POST", 429));

    // Without throttling the same amount goes through.
    let (fake, token, user) = setup(Options {
        throttle: false,
        ..Options::default()
    })
    .await;
    let g = Graph {
        fake: &fake,
        token: &token,
        user: &user,
    };
    let folder = g.folder("Restored").await;
    let id = g.post_mime(&folder, &mime("budget")).await.body["id"]
        .as_str()
        .expect("id")
        .to_string();
    for chunks in [25, 15] {
        let total = chunks * chunk;
        let url = g.session(&id, total).await;
        for i in 0..chunks {
            let got = put_range(&url, &bytes, i * chunk, total).await;
            assert!(matches!(got.status, 200 | 201), "chunk {i}: {}", got.status);
        }
    }
    let stored = fake.messages_in(&user, "Restored");
    let sizes: Vec<usize> = stored[0].attachments.iter().map(|a| a.bytes.len()).collect();
    assert_eq!(sizes, [25 * chunk, 15 * chunk]);
}
