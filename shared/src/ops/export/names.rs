//! Safe, unique entry names for a zip that is unpacked on Windows, macOS and
//! Linux: no absolute paths, no `..`, no control characters, no characters
//! Windows refuses, no reserved device names, at most 255 bytes a component,
//! and no two entries whose names differ only by case.

use std::collections::HashSet;

/// Bytes a component may take (most file systems: 255).
pub const MAX_COMPONENT_BYTES: usize = 255;

const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9", "LPT1", "LPT2",
    "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Cuts a string to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One path component made safe; `suffix` (an extension such as `.eml`) is
/// kept whole at the end, within the byte limit.
pub fn component(raw: &str, suffix: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '/' | '\\' | '|' | '?' | '*' => '_',
            c if c.is_control() => '_',
            // Format characters (bidi overrides, zero-width) hide what a name is.
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' => '_',
            c => c,
        })
        .collect();
    // Windows drops trailing dots and spaces; leading spaces are a trap too.
    s = s.trim_matches(|c| c == ' ').trim_end_matches('.').to_string();
    if s.is_empty() {
        s = "_".into();
    }
    let stem = s.split('.').next().unwrap_or_default().trim_end();
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(stem)) {
        s = format!("_{s}");
    }
    let room = MAX_COMPONENT_BYTES.saturating_sub(suffix.len());
    format!("{}{suffix}", cut(&s, room))
}

/// Gives every entry a unique, safe path.
#[derive(Default)]
pub struct Namer {
    /// Lower-cased paths already given (case-insensitive file systems).
    used: HashSet<String>,
}

impl Namer {
    /// A unique path for `dirs/name + suffix`, and whether it differs from the raw one.
    pub fn path(&mut self, dirs: &[&str], name: &str, suffix: &str) -> (String, bool) {
        let safe_dirs: Vec<String> = dirs.iter().map(|d| component(d, "")).collect();
        let mut renamed = safe_dirs.iter().zip(dirs).any(|(s, d)| s != d);
        let base = component(name, suffix);
        renamed |= base != format!("{name}{suffix}");
        let prefix = safe_dirs.iter().map(|d| format!("{d}/")).collect::<String>();
        let mut candidate = format!("{prefix}{base}");
        let mut n = 1;
        while !self.used.insert(candidate.to_lowercase()) {
            n += 1;
            let tag = format!(" ({n})");
            let stem = component(name, "");
            let room = MAX_COMPONENT_BYTES.saturating_sub(suffix.len() + tag.len());
            candidate = format!("{prefix}{}{tag}{suffix}", cut(&stem, room));
        }
        (candidate, renamed || n > 1)
    }

    /// Marks a path as taken (e.g. `manifest.csv`).
    pub fn reserve(&mut self, path: &str) {
        self.used.insert(path.to_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_safe_and_unique() {
        let mut n = Namer::default();
        let (p, renamed) = n.path(&["alice", "Inbox"], "../../etc/passwd", ".eml");
        assert_eq!(p, "alice/Inbox/.._.._etc_passwd.eml");
        assert!(renamed);
        assert!(!p.split('/').any(|c| c == ".." || c == "."));
        let (p, _) = n.path(&["alice", "Inbox"], "CON", ".eml");
        assert_eq!(p, "alice/Inbox/_CON.eml");
        let (p, _) = n.path(&["alice", "Inbox"], "con.txt", ".eml");
        assert_eq!(p, "alice/Inbox/_con.txt.eml");
        let long = "é".repeat(200);
        let (p, _) = n.path(&["alice"], &long, ".eml");
        let last = p.rsplit('/').next().expect("a last component");
        assert!(last.len() <= MAX_COMPONENT_BYTES && last.ends_with(".eml"));
        let (p, _) = n.path(&["alice"], &long, ".eml");
        let last = p.rsplit('/').next().expect("a last component");
        assert!(
            last.len() <= MAX_COMPONENT_BYTES && last.ends_with(" (2).eml"),
            "{last}"
        );
        let (p, _) = n.path(&["alice"], "bell\u{7}\ttab\u{202E}gpj.exe", ".eml");
        assert_eq!(p, "alice/bell__tab_gpj.exe.eml");
        let (p, _) = n.path(&["/abs", "C:"], "x", "");
        assert_eq!(p, "_abs/C_/x");
        let (a, _) = n.path(&["alice"], "Report", ".eml");
        let (b, renamed) = n.path(&["alice"], "REPORT", ".eml");
        assert_ne!(a.to_lowercase(), b.to_lowercase());
        assert!(renamed);
        let (p, renamed) = n.path(&["alice"], "Plain subject", ".eml");
        assert_eq!(p, "alice/Plain subject.eml");
        assert!(!renamed);
        let (p, _) = n.path(&[".."], "...", "");
        assert_eq!(p, "_/_");
        let (p, _) = n.path(&["x"], "", ".eml");
        assert_eq!(p, "x/_.eml");
    }
}
