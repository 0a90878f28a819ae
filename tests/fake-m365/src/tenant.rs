//! The tenant the fake serves: users of every kind, their mailboxes and
//! OneDrives, SharePoint sites. Generated from a seed, hand-written for the
//! demo, or read from a directory tree of `.eml` files.

use anyhow::{Context as _, Result, bail};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::path::Path;

/// What a user is, which decides what Graph shows of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum UserKind {
    /// Licensed member: mailbox and OneDrive.
    Licensed,
    /// Licensed, mailbox, but the OneDrive was never provisioned (404).
    LicensedNoOneDrive,
    /// Guest (`#EXT#`): no mailbox, no OneDrive.
    Guest,
    /// Member without a licence: no mailbox, no OneDrive.
    Unlicensed,
    /// Licensed but sign-in blocked: mailbox and OneDrive remain.
    Disabled,
    /// Shared mailbox: sign-in blocked, no licence, a mailbox, no OneDrive.
    SharedMailbox,
}

impl UserKind {
    pub const ALL: [UserKind; 6] = [
        Self::Licensed,
        Self::LicensedNoOneDrive,
        Self::Guest,
        Self::Unlicensed,
        Self::Disabled,
        Self::SharedMailbox,
    ];

    pub fn has_mailbox(self) -> bool {
        matches!(
            self,
            Self::Licensed | Self::LicensedNoOneDrive | Self::Disabled | Self::SharedMailbox
        )
    }
    pub fn has_onedrive(self) -> bool {
        matches!(self, Self::Licensed | Self::Disabled)
    }
    pub fn licensed(self) -> bool {
        matches!(self, Self::Licensed | Self::LicensedNoOneDrive | Self::Disabled)
    }
    pub fn account_enabled(self) -> bool {
        !matches!(self, Self::Disabled | Self::SharedMailbox)
    }
}

/// A message of a mailbox: its folder path and raw RFC 822 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub folder: String,
    pub mime: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: String,
    pub user_principal_name: String,
    pub mail: Option<String>,
    pub display_name: String,
    pub kind: UserKind,
    pub drive_id: String,
    pub messages: Vec<Message>,
}

impl User {
    pub fn new(id: impl Into<String>, upn: impl Into<String>, display_name: impl Into<String>, kind: UserKind) -> Self {
        let id = id.into();
        let upn = upn.into();
        let mail = match kind {
            UserKind::Unlicensed => None,
            UserKind::Guest => Some(guest_mail(&upn)),
            _ => Some(upn.clone()),
        };
        Self {
            drive_id: format!("b!{}", id.replace('-', "")),
            id,
            mail,
            user_principal_name: upn,
            display_name: display_name.into(),
            kind,
            messages: Vec::new(),
        }
    }
}

/// A guest's own address: `megan.bowen_fabrikam.com#EXT#@contoso.onmicrosoft.com`
/// is `megan.bowen@fabrikam.com`.
fn guest_mail(upn: &str) -> String {
    let local = upn.split("#EXT#").next().unwrap_or(upn);
    match local.rfind('_') {
        Some(i) => format!("{}@{}", &local[..i], &local[i + 1..]),
        None => local.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub web_url: String,
}

/// Sizes of a generated tenant.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub users: usize,
    pub sites: usize,
}

/// A tenant with one app registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub tenant_id: String,
    pub domain: String,
    pub client_id: String,
    pub client_secret: String,
    pub users: Vec<User>,
    pub sites: Vec<Site>,
}

const FIRST: &[&str] = &[
    "Adele",
    "Alex",
    "Diego",
    "Grady",
    "Henrietta",
    "Isaiah",
    "Johanna",
    "Joni",
    "Lee",
    "Lidia",
    "Lynne",
    "Megan",
    "Miriam",
    "Nestor",
    "Patti",
    "Pradeep",
    "Ravi",
    "Sofia",
    "Tomás",
    "Yuki",
];
const LAST: &[&str] = &[
    "Vance",
    "Wilber",
    "Siciliani",
    "Archie",
    "Mueller",
    "Hubbard",
    "Lauer",
    "Sherman",
    "Gu",
    "Holloway",
    "Smith",
    "Bowen",
    "Graham",
    "Wilke",
    "Fernandez",
    "Gupta",
    "Iyer",
    "Novak",
    "Okafor",
    "Tanaka",
];

fn guid(rng: &mut StdRng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

fn secret(rng: &mut StdRng) -> String {
    (0..40)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect()
}

fn site(rng: &mut StdRng, host: &str, name: &str, display: &str) -> Site {
    let (a, b) = (guid(rng), guid(rng));
    Site {
        id: format!("{host},{a},{b}"),
        name: name.into(),
        display_name: display.into(),
        web_url: format!("https://{host}/sites/{name}"),
    }
}

impl Tenant {
    fn empty(rng: &mut StdRng, domain: &str) -> Self {
        Self {
            tenant_id: guid(rng),
            domain: domain.into(),
            client_id: guid(rng),
            client_secret: secret(rng),
            users: Vec::new(),
            sites: Vec::new(),
        }
    }

    fn host(&self) -> String {
        format!("{}.sharepoint.com", self.domain.split('.').next().unwrap_or("contoso"))
    }

    /// A deterministic tenant of `sizes.users` users of every kind and `sizes.sites` sites.
    pub fn generate(seed: u64, sizes: Sizes) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut t = Self::empty(&mut rng, "contoso.onmicrosoft.com");
        for i in 0..sizes.users {
            let kind = if sizes.users >= 10 && i < UserKind::ALL.len() {
                UserKind::ALL[i]
            } else {
                match rng.gen_range(0..100) {
                    0..75 => UserKind::Licensed,
                    75..80 => UserKind::LicensedNoOneDrive,
                    80..85 => UserKind::Guest,
                    85..90 => UserKind::Unlicensed,
                    90..95 => UserKind::Disabled,
                    _ => UserKind::SharedMailbox,
                }
            };
            let first = FIRST[rng.gen_range(0..FIRST.len())];
            let last = LAST[rng.gen_range(0..LAST.len())];
            let local = format!("{}.{}{i}", first.to_lowercase(), last.to_lowercase()).replace('á', "a");
            let upn = match kind {
                UserKind::Guest => format!("{local}_fabrikam.com#EXT#@{}", t.domain),
                UserKind::SharedMailbox => format!("shared{i}@{}", t.domain),
                _ => format!("{local}@{}", t.domain),
            };
            let name = if kind == UserKind::SharedMailbox {
                format!("Shared mailbox {i}")
            } else {
                format!("{first} {last}")
            };
            let id = guid(&mut rng);
            t.users.push(User::new(id, upn, name, kind));
        }
        let host = t.host();
        if sizes.sites > 0 {
            let root = site(&mut rng, &host, "root", "Communication site");
            t.sites.push(Site {
                web_url: format!("https://{host}"),
                ..root
            });
        }
        for i in 1..sizes.sites {
            let s = site(&mut rng, &host, &format!("team{i}"), &format!("Team site {i}"));
            t.sites.push(s);
        }
        t
    }

    /// A small, readable tenant covering every kind of user, for the demo and tests.
    pub fn small_demo() -> Self {
        let mut rng = StdRng::seed_from_u64(365);
        let mut t = Self::empty(&mut rng, "contoso.onmicrosoft.com");
        let people = [
            ("adele.vance", "Adele Vance", UserKind::Licensed),
            ("alex.wilber", "Alex Wilber", UserKind::Licensed),
            ("diego.siciliani", "Diego Siciliani", UserKind::Licensed),
            ("grady.archie", "Grady Archie", UserKind::LicensedNoOneDrive),
            ("megan.bowen_fabrikam.com#EXT#", "Megan Bowen (guest)", UserKind::Guest),
            ("intern", "Summer Intern", UserKind::Unlicensed),
            ("lee.gu", "Lee Gu (left)", UserKind::Disabled),
            ("info", "Info (shared)", UserKind::SharedMailbox),
        ];
        for (local, name, kind) in people {
            let id = guid(&mut rng);
            t.users.push(User::new(id, format!("{local}@{}", t.domain), name, kind));
        }
        let host = t.host();
        let root = site(&mut rng, &host, "root", "Contoso");
        t.sites.push(Site {
            web_url: format!("https://{host}"),
            ..root
        });
        t.sites.push(site(&mut rng, &host, "Marketing", "Marketing"));
        t.sites.push(site(&mut rng, &host, "Finance", "Finance"));
        t
    }

    /// A tenant from `<dir>/<user upn>/<folder path...>/<n>.eml`: each top-level
    /// directory is a licensed user with a mailbox; its subdirectories are mail
    /// folders (a `.eml` right under the user's directory lands in the Inbox),
    /// each `.eml` a message stored byte for byte. An optional `<dir>/tenant.json`
    /// gives the tenant's ids, domain, sites and more users, and may change the
    /// kind of a directory's user:
    ///
    /// ```json
    /// {"domain": "contoso.test", "tenantId": "..", "clientId": "..", "clientSecret": "..",
    ///  "sites": [{"name": "Marketing", "displayName": "Marketing"}],
    ///  "users": [{"userPrincipalName": "info@contoso.test", "kind": "SharedMailbox"},
    ///            {"userPrincipalName": "guest_fabrikam.com#EXT#@contoso.test", "kind": "Guest",
    ///             "displayName": "A guest", "id": ".."}]}
    /// ```
    ///
    /// The root site is always there; everything not given is drawn from a fixed seed.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let file = dir.join("tenant.json");
        let spec: TenantFile = if file.is_file() {
            let text = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            serde_json::from_slice(&text).with_context(|| format!("parse {}", file.display()))?
        } else {
            TenantFile::default()
        };
        let mut rng = StdRng::seed_from_u64(1);
        let domain = spec.domain.as_deref().unwrap_or("contoso.onmicrosoft.com");
        let mut t = Self::empty(&mut rng, domain);
        if let Some(id) = spec.tenant_id {
            t.tenant_id = id;
        }
        if let Some(id) = spec.client_id {
            t.client_id = id;
        }
        if let Some(secret) = spec.client_secret {
            t.client_secret = secret;
        }
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("read {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let upn = entry.file_name().to_string_lossy().to_string();
            let display = display_name_of(&upn);
            let mut user = User::new(guid(&mut rng), upn, display, UserKind::Licensed);
            collect_messages(&entry.path(), "", &mut user.messages)?;
            t.users.push(user);
        }
        for u in spec.users {
            let existing = t
                .users
                .iter()
                .position(|x| x.user_principal_name.eq_ignore_ascii_case(&u.user_principal_name));
            let (id, messages, display) = match existing {
                Some(i) => {
                    let old = t.users.remove(i);
                    (old.id, old.messages, old.display_name)
                }
                None => (guid(&mut rng), Vec::new(), display_name_of(&u.user_principal_name)),
            };
            let kind = u.kind.unwrap_or(UserKind::Licensed);
            if !messages.is_empty() && !kind.has_mailbox() {
                bail!(
                    "{} has mail in {} but a {kind:?} user has no mailbox",
                    u.user_principal_name,
                    dir.display()
                );
            }
            let mut user = User::new(
                u.id.unwrap_or(id),
                u.user_principal_name,
                u.display_name.unwrap_or(display),
                kind,
            );
            user.messages = messages;
            match existing {
                Some(i) => t.users.insert(i, user),
                None => t.users.push(user),
            }
        }
        let host = t.host();
        let root = site(&mut rng, &host, "root", "Communication site");
        t.sites.push(Site {
            web_url: format!("https://{host}"),
            ..root
        });
        for s in spec.sites {
            let display = s.display_name.unwrap_or_else(|| s.name.clone());
            let site = site(&mut rng, &host, &s.name, &display);
            t.sites.push(site);
        }
        Ok(t)
    }

    /// Fills every mailbox with `per_mailbox` plausible messages (plain-text
    /// RFC 5322, spread over the Inbox, a subfolder, Sent Items and Archive),
    /// deterministic from the seed.
    pub fn with_generated_mail(mut self, seed: u64, per_mailbox: usize) -> Self {
        const FOLDERS: &[&str] = &["Inbox", "Inbox", "Inbox", "Inbox/Projects", "Sent Items", "Archive"];
        const SUBJECTS: &[&str] = &[
            "Quarterly review",
            "Lunch on Friday?",
            "Re: Budget 2027",
            "Contract draft",
            "Travel plans",
            "Weekly status",
            "Invoice 4711",
            "Welcome aboard",
        ];
        let mut rng = StdRng::seed_from_u64(seed);
        let people: Vec<(String, String)> = self
            .users
            .iter()
            .filter_map(|u| u.mail.clone().map(|m| (u.display_name.clone(), m)))
            .collect();
        let external = ("Partner".to_string(), "partner@fabrikam.example".to_string());
        let base = 1_767_600_000; // 2026-01-05
        let domain = self.domain.clone();
        for user in self.users.iter_mut().filter(|u| u.kind.has_mailbox()) {
            let to = user.mail.clone().unwrap_or_else(|| user.user_principal_name.clone());
            for i in 0..per_mailbox {
                let folder = FOLDERS.choose(&mut rng).copied().unwrap_or("Inbox");
                let subject = SUBJECTS.choose(&mut rng).copied().unwrap_or("Hello");
                let (from_name, from) = people.choose(&mut rng).unwrap_or(&external).clone();
                let at = base + rng.gen_range(0..30 * 86_400_i64);
                let date = chrono::DateTime::from_timestamp(at, 0)
                    .map(|d| d.to_rfc2822())
                    .unwrap_or_else(|| "Mon, 5 Jan 2026 09:00:00 +0000".into());
                let id = guid(&mut rng);
                let mime = format!(
                    "From: {from_name} <{from}>\r\nTo: {} <{to}>\r\nSubject: {subject}\r\nDate: {date}\r\n\
                     Message-ID: <{id}@{domain}>\r\nMIME-Version: 1.0\r\n\
                     Content-Type: text/plain; charset=utf-8\r\n\r\n\
                     Message {i} for {}.\r\n",
                    user.display_name, user.display_name
                );
                user.messages.push(Message {
                    folder: folder.to_string(),
                    mime: mime.into_bytes(),
                });
            }
        }
        self
    }

    /// Users with an enabled Exchange licence (the SharePoint throttling band counts them).
    pub fn licensed_users(&self) -> usize {
        self.users.iter().filter(|u| u.kind.licensed()).count()
    }
}

/// `tenant.json` beside the user directories of [`Tenant::from_dir`].
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TenantFile {
    tenant_id: Option<String>,
    domain: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    #[serde(default)]
    sites: Vec<SiteEntry>,
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SiteEntry {
    name: String,
    display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UserEntry {
    user_principal_name: String,
    display_name: Option<String>,
    id: Option<String>,
    kind: Option<UserKind>,
}

/// `adele.vance@contoso.test` is "Adele Vance".
fn display_name_of(upn: &str) -> String {
    upn.split(['@', '#'])
        .next()
        .unwrap_or(upn)
        .split(['.', '_'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn collect_messages(dir: &Path, folder: &str, out: &mut Vec<Message>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().to_string();
        if entry.file_type()?.is_dir() {
            let sub = if folder.is_empty() {
                name
            } else {
                format!("{folder}/{name}")
            };
            collect_messages(&entry.path(), &sub, out)?;
        } else if name.ends_with(".eml") {
            let folder = if folder.is_empty() {
                "Inbox".to_string()
            } else {
                folder.to_string()
            };
            out.push(Message {
                folder,
                mime: std::fs::read(entry.path())?,
            });
        }
    }
    Ok(())
}
