//! What a start without a configured admin token makes, so that the agent
//! dashboard can be tried at once: an admin token and an admin-role agent of
//! the demo site, made at the first start, shown once, kept only as hashes.
//!
//! The admin token's SHA-256 is kept in [`ADMIN_TOKEN_FILE`] in the data
//! directory, the agent's token's (like every agent's) in the store. The
//! file is written last: while it is missing the next start makes both again
//! (the agent keeps its account and gets a new token), so a first start that
//! stopped half-way leaves no secret that nobody saw. Removing the file gives
//! new ones at the next start. A configured `admin.token` wins over the file,
//! and nothing is made.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::admin::AdminToken;
use crate::desk::directory::{Account, Directory};
use crate::store::StoredAgent;

/// The file in the data directory that keeps the made admin token's SHA-256 (hex).
pub const ADMIN_TOKEN_FILE: &str = "admin-token.sha256";

/// Secrets made at this start, to be shown once.
pub struct Made {
    /// The admin API's bearer token.
    pub admin_token: String,
    /// The agent account made for the demo site and its token (`None` when
    /// there is no demo site).
    pub agent: Option<(Account, String)>,
}

impl std::fmt::Debug for Made {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Made")
            .field("agent", &self.agent.as_ref().map(|(a, _)| a.id))
            .finish_non_exhaustive()
    }
}

/// The admin token in force, and what this start made.
#[derive(Debug)]
pub struct Credentials {
    /// The admin token.
    pub admin: AdminToken,
    /// What was made now (first start only).
    pub made: Option<Made>,
}

/// Why the credentials cannot be had.
#[derive(Debug, Error)]
pub enum FirstStartError {
    /// The hash file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The hash file holds something else.
    #[error("{path} does not hold a SHA-256 in hex; remove it to have a new admin token made")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// The hash file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The agent account cannot be stored.
    #[error("cannot store the first start's agent account: {0}")]
    Store(#[source] crate::store::StoreError),
}

/// The admin token for this start. `configured` is `admin.token`; without one
/// the token kept in `data_dir` is used, or, at the first start, a token and
/// (when `demo_site` names a site) an admin agent of that site are made:
/// the agent in `dir` and through `save_agent` (which returns once it is
/// stored), then the token's hash in [`ADMIN_TOKEN_FILE`].
pub fn credentials(
    configured: Option<&str>,
    data_dir: &Path,
    demo_site: Option<&str>,
    dir: &mut Directory,
    save_agent: impl FnOnce(StoredAgent) -> Result<(), crate::store::StoreError>,
    now_ms: u64,
) -> Result<Credentials, FirstStartError> {
    if let Some(t) = configured {
        return Ok(Credentials {
            admin: AdminToken::from_secret(t),
            made: None,
        });
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let hash = from_hex(text.trim()).ok_or(FirstStartError::Corrupt { path })?;
            return Ok(Credentials {
                admin: AdminToken::from_hash(hash),
                made: None,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(FirstStartError::Read { path, source }),
    }
    let agent = match demo_site {
        Some(site) => {
            let (account, token) = dir.first_start_agent(site, now_ms);
            save_agent(account.to_stored()).map_err(FirstStartError::Store)?;
            Some((account, token))
        }
        None => None,
    };
    let (admin_token, admin) = AdminToken::generate();
    write_private(&path, format!("{}\n", to_hex(admin.hash())).as_bytes())
        .map_err(|source| FirstStartError::Write { path, source })?;
    Ok(Credentials {
        admin,
        made: Some(Made { admin_token, agent }),
    })
}

/// Writes a file readable by its owner only, whole or not at all (a
/// temporary file renamed over it).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn to_hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::directory::{Role, FIRST_START_AGENT};

    fn start(
        configured: Option<&str>,
        data: &Path,
        dir: &mut Directory,
        saved: &mut Vec<StoredAgent>,
    ) -> Credentials {
        credentials(
            configured,
            data,
            Some("demo"),
            dir,
            |a| {
                saved.push(a);
                Ok(())
            },
            7,
        )
        .expect("credentials")
    }

    #[test]
    fn first_start_makes_both_and_the_second_reuses_them() {
        let data = tempfile::tempdir().expect("temp dir");
        let mut saved = Vec::new();
        let mut dir = Directory::default();
        let first = start(None, data.path(), &mut dir, &mut saved);
        let made = first.made.expect("made at first start");
        assert!(first.admin.matches(made.admin_token.as_bytes()));
        let (agent, agent_token) = made.agent.expect("an agent for the demo site");
        assert_eq!(
            (agent.name.as_str(), agent.role),
            (FIRST_START_AGENT, Role::Admin)
        );
        assert_eq!(saved.len(), 1, "the agent is stored");
        let kept = std::fs::read_to_string(data.path().join(ADMIN_TOKEN_FILE)).expect("kept");
        assert!(
            !kept.contains(&made.admin_token),
            "only the hash is kept on disk"
        );

        // The next start: what the store and the file kept.
        let mut dir = Directory::load(saved.clone(), Vec::new());
        let second = start(None, data.path(), &mut dir, &mut saved);
        assert!(second.made.is_none(), "nothing is made or shown again");
        assert!(second.admin.matches(made.admin_token.as_bytes()));
        assert_eq!(dir.by_token(&agent_token), Some(agent.id));
        assert_eq!(saved.len(), 1);
    }

    #[test]
    fn a_configured_token_wins_and_nothing_is_made() {
        let data = tempfile::tempdir().expect("temp dir");
        let mut saved = Vec::new();
        let mut dir = Directory::default();
        let c = start(
            Some("configured-token-123"),
            data.path(),
            &mut dir,
            &mut saved,
        );
        assert!(c.made.is_none());
        assert!(c.admin.matches(b"configured-token-123"));
        assert!(saved.is_empty() && dir.all().next().is_none());
        assert!(!data.path().join(ADMIN_TOKEN_FILE).exists());
    }

    #[test]
    fn an_unfinished_first_start_is_done_again_without_a_twin() {
        let data = tempfile::tempdir().expect("temp dir");
        let mut dir = Directory::default();
        let r = credentials(
            None,
            data.path(),
            Some("demo"),
            &mut dir,
            |_| Err(crate::store::StoreError::Closed),
            7,
        );
        assert!(matches!(r, Err(FirstStartError::Store(_))));
        assert!(!data.path().join(ADMIN_TOKEN_FILE).exists());
        let mut saved = Vec::new();
        let c = start(None, data.path(), &mut dir, &mut saved);
        let (agent, token) = c.made.expect("made").agent.expect("agent");
        assert_eq!(dir.all().count(), 1, "the same account, a new token");
        assert_eq!(dir.by_token(&token), Some(agent.id));
    }

    #[test]
    fn a_damaged_hash_file_is_named() {
        let data = tempfile::tempdir().expect("temp dir");
        std::fs::write(data.path().join(ADMIN_TOKEN_FILE), "not hex\n").expect("write");
        let r = credentials(
            None,
            data.path(),
            None,
            &mut Directory::default(),
            |_| Ok(()),
            7,
        );
        let e = r.expect_err("refused").to_string();
        assert!(e.contains(ADMIN_TOKEN_FILE), "{e}");
    }

    #[test]
    fn hex_round_trips() {
        let h = [0xab; 32];
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("ab"), None);
        assert_eq!(from_hex(&"zz".repeat(32)), None);
    }
}
