//! The tenant the fake serves: users of every kind, their mailboxes and
//! OneDrives, SharePoint sites. Generated from a seed, hand-written for the
//! demo, or read from a directory tree of `.eml` files.

use anyhow::{Context as _, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
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
        let mail = (kind != UserKind::Unlicensed).then(|| upn.clone());
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
#[derive(Debug, Clone)]
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
    /// directory is a licensed user; its subdirectories are mail folders.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(1);
        let mut t = Self::empty(&mut rng, "contoso.onmicrosoft.com");
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("read {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let upn = entry.file_name().to_string_lossy().to_string();
            let display = upn.split('@').next().unwrap_or(&upn).replace('.', " ");
            let mut user = User::new(guid(&mut rng), upn, display, UserKind::Licensed);
            collect_messages(&entry.path(), "", &mut user.messages)?;
            t.users.push(user);
        }
        let host = t.host();
        let root = site(&mut rng, &host, "root", "Contoso");
        t.sites.push(Site {
            web_url: format!("https://{host}"),
            ..root
        });
        Ok(t)
    }

    /// Users with an enabled Exchange licence (the SharePoint throttling band counts them).
    pub fn licensed_users(&self) -> usize {
        self.users.iter().filter(|u| u.kind.licensed()).count()
    }
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
