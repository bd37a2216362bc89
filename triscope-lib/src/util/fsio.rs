//! File-system safety: whole-or-nothing writes ([`write_atomic`]) and the clean-up of what a
//! killed writer left ([`remove_stale_temporaries`]). Every file Triscope writes goes through it.

use std::path::{Path, PathBuf};

use crate::error::{Result, TriscopeError};

/// Write `bytes` to `path` through a temporary file in the same folder and a rename, so a
/// killed process never leaves a torn file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = write_error(path);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(&err)?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// The error of a failed write to `path`, for `map_err`.
pub fn write_error(path: &Path) -> impl Fn(std::io::Error) -> TriscopeError + '_ {
    move |source| TriscopeError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Remove the temporary files [`write_atomic`] left in `dir` when a process was killed
/// mid-write (`.NAME.tmpPID` of another process: this process's own are in use). Returns what
/// was removed; the final files are never touched.
pub fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let own = format!(".tmp{}", std::process::id());
    let entries = std::fs::read_dir(dir).map_err(|source| TriscopeError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let stale = name.starts_with('.')
            && !name.ends_with(&own)
            && name.rsplit_once(".tmp").is_some_and(|(stem, pid)| {
                stem.len() > 1 && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
            });
        if stale && entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|source| TriscopeError::Write {
                path: path.clone(),
                source,
            })?;
            removed.push(path);
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("triscope-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let own = format!(".last.safetensors.tmp{}", std::process::id());
        let names = [
            ".last.safetensors.tmp4242",
            ".metrics.jsonl.tmp17",
            own.as_str(),
            "last.safetensors",
            ".hidden",
            ".notes.tmp",
            ".x.tmp12a",
        ];
        for n in names {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        let removed = remove_stale_temporaries(&dir).unwrap();
        assert_eq!(
            removed,
            vec![
                dir.join(".last.safetensors.tmp4242"),
                dir.join(".metrics.jsonl.tmp17")
            ]
        );
        for n in &names[2..] {
            assert!(dir.join(n).exists(), "{n} was removed");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
