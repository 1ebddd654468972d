//! What the node reads from the machine for the replica's security: the cluster key file (a
//! key ring), the client keys file, and randomness from the operating system (new key files, the replica's seeds). The protocol
//! code itself never touches a file or the OS random source.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::protocol::auth::{wipe, ClusterKey, KeyError, KeyRing, MAX_KEY_FILE_BYTES, NONCE_LEN};
use crate::protocol::client_auth::{ClientKey, ClientKeyError, ClientKeys};

/// Bytes of a key made by [`generate_key_text`].
const GENERATED_KEY_BYTES: usize = 32;

/// Reads the cluster key file at `path` and returns its current key (the first of its ring).
///
/// # Errors
/// As [`load_key_ring`].
pub fn load_key(path: &Path) -> Result<ClusterKey, KeyError> {
    load_key_ring(path).map(|ring| ring.current().clone())
}

/// Reads the cluster key file at `path` as a [`KeyRing`]: one key per line, the first current
/// (format in `protocol::auth`).
///
/// # Errors
/// [`KeyError::Io`] if the file cannot be read; [`KeyError::FileTooLong`] past
/// [`MAX_KEY_FILE_BYTES`]; [`KeyError::Empty`], [`KeyError::TooShort`] or
/// [`KeyError::TooManyKeys`] (carrying the path) for what it holds.
pub fn load_key_ring(path: &Path) -> Result<KeyRing, KeyError> {
    let mut contents = read_secret_file(path)?;
    let ring = KeyRing::from_file_bytes(&contents, path);
    wipe(&mut contents);
    ring
}

/// Reads a node's client keys file (`[clients] keys_file`; format in
/// `protocol::client_auth`).
///
/// # Errors
/// [`ClientKeyError::File`] if it cannot be read or is longer than [`MAX_KEY_FILE_BYTES`];
/// what [`ClientKeys::from_file_bytes`] finds wrong in it.
pub fn load_client_keys(path: &Path) -> Result<ClientKeys, ClientKeyError> {
    let mut contents = read_secret_file(path).map_err(ClientKeyError::File)?;
    let keys = ClientKeys::from_file_bytes(&contents, path);
    wipe(&mut contents);
    keys
}

/// Reads a client's own key file (`--client-key`): its first `<name> <key>` or
/// `<name> <grants> <key>` line.
///
/// # Errors
/// As [`load_client_keys`], and what [`ClientKey::from_file_bytes`] finds wrong.
pub fn load_client_key(path: &Path) -> Result<ClientKey, ClientKeyError> {
    let mut contents = read_secret_file(path).map_err(ClientKeyError::File)?;
    let key = ClientKey::from_file_bytes(&contents, path);
    wipe(&mut contents);
    key
}

/// The bytes of a file holding secrets, at most [`MAX_KEY_FILE_BYTES`] of them.
///
/// # Errors
/// [`KeyError::Io`], [`KeyError::FileTooLong`].
pub(crate) fn read_secret_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let io_error = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut contents = Vec::new();
    let limit = u64::try_from(MAX_KEY_FILE_BYTES).expect("the limit fits in u64");
    let file = File::open(path).map_err(io_error)?;
    let read = file.take(limit + 1).read_to_end(&mut contents);
    match read {
        Err(source) => {
            wipe(&mut contents);
            Err(io_error(source))
        }
        Ok(n) if n > MAX_KEY_FILE_BYTES => {
            wipe(&mut contents);
            Err(KeyError::FileTooLong {
                path: path.to_path_buf(),
                max: MAX_KEY_FILE_BYTES,
            })
        }
        Ok(_) => Ok(contents),
    }
}

/// Makes the text of a new key file: 32 random bytes as 64 lowercase hex characters.
///
/// # Errors
/// The OS random source failed.
pub fn generate_key_text() -> io::Result<String> {
    let mut raw = [0u8; GENERATED_KEY_BYTES];
    fill_random(&mut raw)?;
    let mut text = String::with_capacity(GENERATED_KEY_BYTES * 2);
    for byte in raw {
        text.push(hex_digit(byte >> 4));
        text.push(hex_digit(byte & 0x0f));
    }
    wipe(&mut raw);
    Ok(text)
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).expect("a nibble is below 16")
}

/// A fresh nonce from the OS random source, for the node driver to pass to the handshake.
///
/// # Errors
/// The OS random source failed.
pub fn random_nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    Ok(nonce)
}

fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    getrandom::getrandom(buf).map_err(|e| match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::other(format!("random source failed: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::auth::tests::{key, transcript};
    use crate::protocol::auth::{prove, verify, Role, MIN_KEY_BYTES};
    use std::fs;

    #[test]
    fn load_trims_whitespace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        fs::write(&path, " \n\t0123456789abcdef0123\r\n\n").expect("write key");
        let loaded = load_key(&path).expect("valid key file");
        let t = transcript();
        let mac = prove(&key("0123456789abcdef0123"), Role::Primary, &t);
        assert!(verify(&loaded, Role::Primary, &t, &mac));
    }

    #[test]
    fn load_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let short = dir.path().join("short");
        fs::write(&short, "  0123456789abcde \n").expect("write");
        let blank = dir.path().join("blank");
        fs::write(&blank, " \n\t \n").expect("write");
        let missing = dir.path().join("missing");

        match load_key(&short) {
            Err(KeyError::TooShort {
                path,
                len: 15,
                min: MIN_KEY_BYTES,
            }) => {
                assert_eq!(path.as_deref(), Some(short.as_path()));
            }
            other => panic!("short key: {other:?}"),
        }
        match load_key(&blank) {
            Err(KeyError::Empty { path }) => assert_eq!(path.as_deref(), Some(blank.as_path())),
            other => panic!("blank key: {other:?}"),
        }
        match load_key(&missing) {
            Err(KeyError::Io { path, source }) => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("missing key: {other:?}"),
        }
        let huge = dir.path().join("huge");
        fs::write(&huge, vec![b'k'; MAX_KEY_FILE_BYTES + 1]).expect("write");
        match load_key(&huge) {
            Err(KeyError::FileTooLong { path, max }) => {
                assert_eq!((path, max), (huge, MAX_KEY_FILE_BYTES));
            }
            other => panic!("huge key file: {other:?}"),
        }
        let at_limit = dir.path().join("at_limit");
        fs::write(&at_limit, vec![b'k'; MAX_KEY_FILE_BYTES]).expect("write");
        assert!(load_key(&at_limit).is_ok());
        match load_key(dir.path()) {
            Err(KeyError::Io { path, .. }) => assert_eq!(path, dir.path()),
            other => panic!("directory as key file: {other:?}"),
        }
        let message = load_key(&short).expect_err("short").to_string();
        assert!(
            message.contains("15 bytes") && message.contains("short"),
            "{message}"
        );
    }

    #[test]
    fn generated_key_text_is_loadable_hex() {
        let a = generate_key_text().expect("random source");
        let b = generate_key_text().expect("random source");
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{a}"
        );
        assert_ne!(a, b);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        fs::write(&path, format!("{a}\n")).expect("write");
        assert!(load_key(&path).is_ok());
    }

    #[test]
    fn key_files_load_as_rings_and_client_keys_with_typed_errors() {
        use crate::protocol::client_auth::{ClientKeyError, Grants};
        let dir = tempfile::tempdir().expect("tempdir");
        let ring = dir.path().join("ring");
        fs::write(
            &ring,
            "# step 2\nnew-key-0123456789abcdef\nold-key-0123456789abcdef\n",
        )
        .expect("write");
        assert_eq!(load_key_ring(&ring).expect("a ring").len(), 2);
        let t = transcript();
        let current = prove(&load_key(&ring).expect("current"), Role::Primary, &t);
        let new = prove(&key("new-key-0123456789abcdef"), Role::Primary, &t);
        assert_eq!(current, new, "load_key gives the first line");
        let clients = dir.path().join("clients");
        fs::write(&clients, "a read,append k-0123456789abcdef\n").expect("write");
        let keys = load_client_keys(&clients).expect("client keys");
        assert_eq!(keys.grants("a"), Some(Grants::APPEND.union(Grants::READ)));
        assert_eq!(load_client_key(&clients).expect("a client key").name(), "a");
        let missing = dir.path().join("missing");
        assert!(matches!(
            load_client_keys(&missing),
            Err(ClientKeyError::File(KeyError::Io { .. }))
        ));
        fs::write(&clients, vec![b'k'; MAX_KEY_FILE_BYTES + 1]).expect("write");
        assert!(matches!(
            load_client_key(&clients),
            Err(ClientKeyError::File(KeyError::FileTooLong { .. }))
        ));
    }

    #[test]
    fn random_nonces_differ() {
        let a = random_nonce().expect("random source");
        let b = random_nonce().expect("random source");
        assert_ne!(a, b);
    }
}
