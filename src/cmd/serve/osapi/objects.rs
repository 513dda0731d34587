//! osapi's object store, as drover keeps it: a directory of the server's
//! (`drover serve --objects DIR`) whose files a unit-file request names.
//! A request names a file, never a path: anything that could leave the
//! directory, or is not a plain regular file in it, is refused before
//! anything is read.

use std::io::Read;
use std::path::Path;

use super::super::error::ApiError;

/// The largest object read: the `unit:` module's bound on a unit file.
const MAX_OBJECT: u64 = 1 << 20;

/// Why `name` is not an object's name, if it is not: a file name of
/// letters, digits and `-_.@:+`, not starting with `.`, at most 255 bytes.
pub fn invalid_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.contains('/') || name.contains('\\') {
        return Some("it is a path; name a file of the server's --objects directory");
    }
    if name.starts_with('.') {
        return Some("it starts with `.` (`.`, `..` and hidden files are never objects)");
    }
    if name.len() > 255 {
        return Some("it is longer than 255 bytes");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.@:+".contains(c))
    {
        return Some("it has a character other than letters, digits and `-_.@:+`");
    }
    None
}

/// The text of object `name` of `dir`: 400 naming what is wrong when the
/// server has no `--objects`, the name is not a file name, or the file is
/// missing, not a regular file (a link, a FIFO), over 1 MiB or not UTF-8.
pub fn read(dir: Option<&Path>, name: &str) -> Result<String, ApiError> {
    if let Some(why) = invalid_name(name) {
        return Err(ApiError::bad_request(format!(
            "object `{}`: {why}",
            name.escape_default()
        )));
    }
    let Some(dir) = dir else {
        return Err(ApiError::bad_request(
            "this server has no object store: start it with --objects DIR (a directory of unit files)",
        ));
    };
    let path = dir.join(name);
    let refuse = |why: String| ApiError::bad_request(format!("object `{name}`: {why}"));
    // Not following a link, and not waiting on a FIFO's writer: what is
    // opened is checked for a regular file before a byte is read.
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
    };
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse("no such file in the object store".into()))
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refuse(
                "it is a symbolic link; objects are regular files".into(),
            ))
        }
        Err(e) => return Err(refuse(format!("cannot be read: {e}"))),
    };
    let meta = file
        .metadata()
        .map_err(|e| refuse(format!("cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_OBJECT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("cannot be read: {e}")))?;
    if bytes.len() as u64 > MAX_OBJECT {
        return Err(refuse("it is larger than 1 MiB".into()));
    }
    String::from_utf8(bytes).map_err(|_| refuse("it is not UTF-8 text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_objects() {
        for ok in ["my-app.service", "a", "web@1.service", "x_y:z+1.conf"] {
            assert_eq!(invalid_name(ok), None, "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "/etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            "a b",
            "a\0b",
            "a\nb",
            "ünit",
            &"x".repeat(256),
        ] {
            assert!(invalid_name(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn links_fifos_directories_and_big_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("ok.service"), "[Service]\nExecStart=/bin/true\n").unwrap();
        std::fs::write(d.join("big"), vec![b'x'; (MAX_OBJECT + 1) as usize]).unwrap();
        std::fs::write(d.join("bin"), [0xff, 0xfe]).unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        let fifo = std::ffi::CString::new(d.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path we own.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read(Some(d), "ok.service").unwrap(),
            "[Service]\nExecStart=/bin/true\n"
        );
        for (name, says) in [
            ("missing", "no such file"),
            ("big", "larger than 1 MiB"),
            ("bin", "not UTF-8"),
            ("sub", "not a regular file"),
            ("link", "symbolic link"),
            ("fifo", "not a regular file"),
            ("../ok.service", "is a path"),
        ] {
            let e = read(Some(d), name).unwrap_err();
            assert_eq!(e.code, 400, "{name}");
            assert!(e.details.contains(says), "{name}: {}", e.details);
        }
        let e = read(None, "ok.service").unwrap_err();
        assert!(e.details.contains("--objects"), "{}", e.details);
    }
}
